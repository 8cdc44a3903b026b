-- A later page of the home feed: the rows strictly after the cursor (keyset pagination,
-- served by activities_home_idx whatever the table's size). The cursor's values are bound as
-- a timestamptz and a uuid, already parsed by the API.
SELECT
/*@activities/_shape*/
FROM public.activities
JOIN public.users ON users.uuid = activities.user_uuid
WHERE (activities.created_at, activities.uuid) < (%(created_at)s, %(uuid)s)
  AND activities.reply_to_activity_uuid IS NULL
  AND /*@activities/_live*/
ORDER BY activities.created_at DESC, activities.uuid DESC
LIMIT %(limit)s
