DROP TRIGGER IF EXISTS activities_count_replies_on_delete ON public.activities;
DROP TRIGGER IF EXISTS activities_count_replies_on_insert ON public.activities;
DROP FUNCTION IF EXISTS public.activities_count_replies();
