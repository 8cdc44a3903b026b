-- The JSON shape of an activity, the one definition every endpoint uses: the feed, one
-- activity, and the answer to its creation. Templates include it as /*@activities/_shape*/;
-- it expects the activity row as `activities` and its author as `users`.
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
