-- Record a confirmed Cognito user: the one statement of the post-confirmation handler and of
-- the reconcile chore, so both follow the same rules.
-- - Safe to repeat: a second call for the same sub adds nothing and returns no row.
-- - Every confirmed user gets exactly one row: when the wanted handle belongs to someone else,
--   the handle becomes "<wanted>_<first 8 hex digits of md5(sub)>", the same on every retry.
-- Returns the handle recorded (no row: the sub was already recorded).
WITH wanted AS (
  SELECT CASE
           WHEN EXISTS (SELECT 1 FROM public.users WHERE users.handle = %(handle)s)
           THEN %(handle)s || '_' || left(md5(%(cognito_user_id)s), 8)
           ELSE %(handle)s
         END AS handle
)
INSERT INTO public.users (display_name, email, handle, cognito_user_id)
SELECT %(display_name)s, %(email)s, wanted.handle, %(cognito_user_id)s
FROM wanted
ON CONFLICT (cognito_user_id) DO NOTHING
RETURNING handle
