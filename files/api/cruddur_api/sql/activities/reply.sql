-- A reply by the token's user to a live activity, in one statement (so one transaction): the
-- reply row (expiring with the activity it answers) and the parent's replies_count + 1. The
-- parent is locked first, so concurrent replies count one by one and none lands on a parent
-- being deleted. One row comes back: the outcome, and the reply as JSON text when created.
WITH author AS (
  SELECT users.uuid FROM public.users WHERE users.cognito_user_id = %(sub)s
),
parent AS (
  SELECT activities.uuid, activities.expires_at
  FROM public.activities
  WHERE activities.uuid = %(parent)s
  FOR UPDATE
),
activities AS (
  INSERT INTO public.activities (user_uuid, message, reply_to_activity_uuid, expires_at)
  SELECT author.uuid, %(message)s, parent.uuid, parent.expires_at
  FROM author, parent
  WHERE parent.expires_at IS NULL OR parent.expires_at > current_timestamp
  RETURNING *
),
counted AS (
  UPDATE public.activities AS parent_row
  SET replies_count = parent_row.replies_count + 1
  FROM activities
  WHERE parent_row.uuid = activities.reply_to_activity_uuid
  RETURNING parent_row.uuid
)
SELECT
  CASE
    WHEN NOT EXISTS (SELECT 1 FROM author) THEN 'user_not_registered'
    WHEN NOT EXISTS (SELECT 1 FROM parent) THEN 'activity_not_found'
    WHEN NOT EXISTS (SELECT 1 FROM counted) THEN 'activity_expired'
    ELSE 'created'
  END AS outcome,
  (SELECT row_to_json(object_row)::text
   FROM (
     SELECT
/*@activities/_shape*/
     FROM activities
     JOIN public.users ON users.uuid = activities.user_uuid
   ) object_row) AS reply
