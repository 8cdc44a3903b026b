-- Cruddur's seed data: two users and one activity. One statement, so it is all or nothing;
-- it adds only what is missing and returns how many rows it added.
WITH seed_users (display_name, handle) AS (
  VALUES ('Andrew Brown', 'andrewbrown'),
         ('Andrew Bayko', 'bayko')
),
added_users AS (
  INSERT INTO public.users (display_name, handle)
  SELECT display_name, handle FROM seed_users
  ON CONFLICT (handle) DO NOTHING
  RETURNING uuid, handle
),
author AS (
  SELECT uuid FROM added_users WHERE handle = 'andrewbrown'
  UNION ALL
  SELECT uuid FROM public.users WHERE handle = 'andrewbrown'
),
added_activities AS (
  INSERT INTO public.activities (user_uuid, message, expires_at)
  SELECT author.uuid, 'This was imported as seed data!', current_timestamp + interval '10 days'
  FROM author
  WHERE NOT EXISTS (
    SELECT 1 FROM public.activities
    WHERE activities.user_uuid = author.uuid
      AND activities.message = 'This was imported as seed data!'
  )
  LIMIT 1
  RETURNING uuid
)
SELECT (SELECT count(*) FROM added_users)      AS users_added,
       (SELECT count(*) FROM added_activities) AS activities_added;
