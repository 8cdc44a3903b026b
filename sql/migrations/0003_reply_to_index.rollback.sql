-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS public.activities_reply_to_activity_uuid_idx;
