-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS public.activities_expires_at_idx;
DROP INDEX CONCURRENTLY IF EXISTS public.activities_user_feed_idx;
DROP INDEX CONCURRENTLY IF EXISTS public.activities_home_idx;
