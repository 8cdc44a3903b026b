SELECT
  activities.uuid,
  users.display_name,
  users.handle,
  activities.message,
  activities.replies_count,
  activities.reposts_count,
  activities.likes_count,
  activities.reply_to_activity_uuid,
  activities.created_at,
  activities.expires_at
FROM public.activities
JOIN public.users ON users.uuid = activities.user_uuid
WHERE activities.uuid = %(uuid)s
