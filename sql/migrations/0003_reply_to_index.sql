-- depends: 0002_users_activities
-- transactional: false
-- Every foreign key gets an index that supports it (tests/test_schema.py keeps it so). Without
-- one on reply_to_activity_uuid, each deleted activity made PostgreSQL scan the whole table for
-- its replies (ON DELETE SET NULL): removing 5 % of 400,000 activities took minutes, not a second.
-- Built CONCURRENTLY, so the API keeps writing while it builds; a build that was interrupted
-- leaves an invalid index behind, which the first statement removes before the next attempt.
DROP INDEX CONCURRENTLY IF EXISTS public.activities_reply_to_activity_uuid_idx;
CREATE INDEX CONCURRENTLY activities_reply_to_activity_uuid_idx ON public.activities (reply_to_activity_uuid);
