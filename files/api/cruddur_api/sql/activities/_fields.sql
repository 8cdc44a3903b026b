-- The fields of an activity, in the order every endpoint serves them. Included
-- where the activity row is named `activities` and its author `users`.
  activities.uuid,
  users.display_name,
  users.handle,
  activities.message,
  activities.replies_count,
  activities.reposts_count,
  activities.likes_count,
  activities.reply_to_activity_uuid,
  activities.expires_at,
  activities.created_at
