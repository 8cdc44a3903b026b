-- A later page of a user's feed: the rows strictly after the cursor, as home_after (served by
-- activities_user_feed_idx).
SELECT
/*@activities/_shape*/
FROM public.activities
JOIN public.users ON users.uuid = activities.user_uuid
WHERE activities.user_uuid = (SELECT uuid FROM public.users WHERE handle = %(handle)s)
  AND (activities.created_at, activities.uuid) < (%(created_at)s, %(uuid)s)
  AND activities.reply_to_activity_uuid IS NULL
  AND /*@activities/_live*/
ORDER BY activities.created_at DESC, activities.uuid DESC
LIMIT %(limit)s
