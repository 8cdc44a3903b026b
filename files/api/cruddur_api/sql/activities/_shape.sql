-- The JSON shape of an activity, the one definition every endpoint uses: the feeds, one
-- activity, and the answer to a create or a reply. Templates include this fragment by name
-- where the activity row is named `activities` and its author `users`. `replies` holds its live
-- replies, newest first, at most 20 (each with the fields, without replies of its own); they are
-- found by activities_reply_to_idx.
/*@activities/_fields*/,
  (SELECT COALESCE(json_agg(reply ORDER BY reply.created_at DESC, reply.uuid DESC), '[]'::json)
   FROM (SELECT activities.uuid AS uuid) AS parent,
   LATERAL (
     SELECT
/*@activities/_fields*/
     FROM public.activities
     JOIN public.users ON users.uuid = activities.user_uuid
     WHERE activities.reply_to_activity_uuid = parent.uuid
       AND /*@activities/_live*/
     ORDER BY activities.created_at DESC, activities.uuid DESC
     LIMIT 20
   ) AS reply) AS replies
