-- First page of a user's feed (GET /api/activities/@handle): their live activities that are
-- not replies, newest first.
SELECT
/*@activities/_shape*/
FROM public.activities
JOIN public.users ON users.uuid = activities.user_uuid
WHERE activities.user_uuid = (SELECT uuid FROM public.users WHERE handle = %(handle)s)
  AND activities.reply_to_activity_uuid IS NULL
  AND /*@activities/_live*/
ORDER BY activities.created_at DESC, activities.uuid DESC
LIMIT %(limit)s
