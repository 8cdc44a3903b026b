-- First page of the home feed: live activities that are not replies, newest first.
SELECT
/*@activities/_shape*/
FROM public.activities
JOIN public.users ON users.uuid = activities.user_uuid
WHERE activities.reply_to_activity_uuid IS NULL
  AND /*@activities/_live*/
ORDER BY activities.created_at DESC, activities.uuid DESC
LIMIT %(limit)s
