-- Insert an activity for the user with the given handle and return it as JSON text, in the
-- shape every endpoint uses. No row comes back when no user has that handle. A data-modifying
-- WITH must stay at the top level, so this statement builds its own JSON instead of being
-- wrapped; the new row is named `activities` so the shared select list applies to it.
WITH activities AS (
  INSERT INTO public.activities (user_uuid, message, expires_at)
  SELECT users.uuid, %(message)s, current_timestamp + %(ttl)s::interval
  FROM public.users
  WHERE users.handle = %(handle)s
  RETURNING *
)
SELECT row_to_json(object_row)::text
FROM (
  SELECT
/*@activities/_shape*/
  FROM activities
  JOIN public.users ON users.uuid = activities.user_uuid
) object_row
