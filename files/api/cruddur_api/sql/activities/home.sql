-- First page of the home feed, newest first.
SELECT
/*@activities/_shape*/
FROM public.activities
JOIN public.users ON users.uuid = activities.user_uuid
ORDER BY activities.created_at DESC, activities.uuid DESC
LIMIT %(limit)s
