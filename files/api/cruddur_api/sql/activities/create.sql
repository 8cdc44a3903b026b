-- Insert an activity for the user with the given handle and return it as one JSON object.
-- No row comes back when no user has that handle. (A data-modifying WITH must stay at the top
-- level, so this statement builds its own JSON instead of being wrapped.)
WITH created AS (
  INSERT INTO public.activities (user_uuid, message, expires_at)
  SELECT users.uuid, %(message)s, current_timestamp + %(ttl)s::interval
  FROM public.users
  WHERE users.handle = %(handle)s
  RETURNING uuid, user_uuid, message, replies_count, reposts_count, likes_count,
            reply_to_activity_uuid, created_at, expires_at
)
SELECT row_to_json(object_row)
FROM (
  SELECT
    created.uuid,
    users.display_name,
    users.handle,
    created.message,
    created.replies_count,
    created.reposts_count,
    created.likes_count,
    created.reply_to_activity_uuid,
    created.created_at,
    created.expires_at
  FROM created
  JOIN public.users ON users.uuid = created.user_uuid
) object_row
