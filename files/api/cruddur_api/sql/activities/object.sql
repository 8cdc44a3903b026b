-- One live activity (an expired one is gone, as from the feeds).
SELECT
/*@activities/_shape*/
FROM public.activities
JOIN public.users ON users.uuid = activities.user_uuid
WHERE activities.uuid = %(uuid)s
  AND /*@activities/_live*/
