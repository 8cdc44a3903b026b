-- depends: 0003_reply_to_index
-- transactional: false
-- The feeds list the activities that are not replies, newest first, a page at a time: the home
-- feed over everyone's, a user's feed (GET /api/activities/@handle) over theirs. Partial indexes
-- in that order serve a page by walking them, without sorting and without stepping over replies,
-- however many replies the table holds. An index on expires_at lets db-purge-expired take the
-- oldest expired rows a batch at a time without scanning the table.
-- Built CONCURRENTLY, so the API keeps writing while they build; each build that was interrupted
-- leaves an invalid index behind, which the statement before it removes on the next attempt.
DROP INDEX CONCURRENTLY IF EXISTS public.activities_home_idx;
CREATE INDEX CONCURRENTLY activities_home_idx ON public.activities (created_at DESC, uuid DESC)
  WHERE reply_to_activity_uuid IS NULL;
DROP INDEX CONCURRENTLY IF EXISTS public.activities_user_feed_idx;
CREATE INDEX CONCURRENTLY activities_user_feed_idx ON public.activities (user_uuid, created_at DESC, uuid DESC)
  WHERE reply_to_activity_uuid IS NULL;
DROP INDEX CONCURRENTLY IF EXISTS public.activities_expires_at_idx;
CREATE INDEX CONCURRENTLY activities_expires_at_idx ON public.activities (expires_at);
