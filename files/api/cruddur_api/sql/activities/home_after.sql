-- A later page of the home feed: the rows strictly after the cursor (keyset pagination,
-- served by activities_feed_idx whatever the table's size).
SELECT
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
FROM public.activities
JOIN public.users ON users.uuid = activities.user_uuid
WHERE (activities.created_at, activities.uuid) < (%(created_at)s::timestamptz, %(uuid)s::uuid)
ORDER BY activities.created_at DESC, activities.uuid DESC
LIMIT %(limit)s
