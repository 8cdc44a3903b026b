-- Insert an activity for the user the access token names (users.cognito_user_id = its sub) and
-- return it as JSON text, in the shape every endpoint uses. No row comes back when no user has
-- that identity. A data-modifying WITH must stay at the top level, so this statement builds its
-- own JSON instead of being wrapped; the new row is named `activities` so the shared select list
-- applies to it.
WITH activities AS (
  INSERT INTO public.activities (user_uuid, message, expires_at)
  SELECT users.uuid, %(message)s, current_timestamp + %(ttl)s::interval
  FROM public.users
  WHERE users.cognito_user_id = %(sub)s
  RETURNING *
)
SELECT row_to_json(object_row)::text
FROM (
  SELECT
/*@activities/_shape*/
  FROM activities
  JOIN public.users ON users.uuid = activities.user_uuid
) object_row
