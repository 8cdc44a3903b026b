DROP TABLE IF EXISTS public.activities;
DROP TABLE IF EXISTS public.users;
