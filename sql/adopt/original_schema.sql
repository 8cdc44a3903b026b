-- adopts: 0001_uuid_ossp 0002_users_activities
-- Brings a database built by the original db/schema.sql (with or without the email column
-- teams added by hand) to the schema migration 0002 creates, keeping every row. It runs in the
-- same transaction that records those two migrations as applied, after the rows that cannot be
-- upgraded without loss were ruled out (cruddur_migrations, state adopted), as the owner role.
--
-- Exempt from squawk's lock rules, reviewed: the adoption runs once, in the transaction that
-- records the baseline, so the rewrite and its record commit together. NOT VALID constraints,
-- or indexes and constraints built CONCURRENTLY outside that transaction, would leave the
-- half-adopted database this script exists to rule out. It holds the two tables' locks while it
-- rewrites them.
-- squawk-ignore-file changing-column-type, adding-not-nullable-field -- reviewed: one-time rewrite, see above
-- squawk-ignore-file constraint-missing-not-valid, adding-foreign-key-constraint -- reviewed: one-time rewrite, see above
-- squawk-ignore-file disallowed-unique-constraint, require-concurrent-index-creation -- reviewed: one-time rewrite, see above

ALTER TABLE public.users ADD COLUMN IF NOT EXISTS email text;

-- The original seed gave both mock users the placeholder Cognito id 'MOCK': not a Cognito sub.
UPDATE public.users SET cognito_user_id = NULL WHERE cognito_user_id = 'MOCK';

-- The original wrote server-local times into "timestamp" columns; RDS and the original
-- container both run in UTC, so they are read as UTC.
ALTER TABLE public.users
  ALTER COLUMN display_name SET NOT NULL,
  ALTER COLUMN handle SET NOT NULL,
  ALTER COLUMN created_at TYPE timestamptz USING created_at AT TIME ZONE 'UTC',
  ADD CONSTRAINT users_handle_key UNIQUE (handle),
  ADD CONSTRAINT users_cognito_user_id_key UNIQUE (cognito_user_id),
  ADD CONSTRAINT users_handle_not_blank CHECK (btrim(handle) <> '');

-- Counters the original left nullable: a NULL count is a count of 0 (their default).
UPDATE public.activities SET replies_count = coalesce(replies_count, 0),
                             reposts_count = coalesce(reposts_count, 0),
                             likes_count = coalesce(likes_count, 0)
WHERE replies_count IS NULL OR reposts_count IS NULL OR likes_count IS NULL;

-- reply_to_activity_uuid was an integer the original never set (only NULLs get this far).
ALTER TABLE public.activities
  ALTER COLUMN replies_count SET NOT NULL,
  ALTER COLUMN reposts_count SET NOT NULL,
  ALTER COLUMN likes_count SET NOT NULL,
  ALTER COLUMN reply_to_activity_uuid TYPE uuid USING NULL::uuid,
  ALTER COLUMN expires_at TYPE timestamptz USING expires_at AT TIME ZONE 'UTC',
  ALTER COLUMN created_at TYPE timestamptz USING created_at AT TIME ZONE 'UTC',
  ADD CONSTRAINT activities_user_uuid_fkey FOREIGN KEY (user_uuid)
    REFERENCES public.users (uuid) ON DELETE CASCADE,
  ADD CONSTRAINT activities_reply_to_activity_uuid_fkey FOREIGN KEY (reply_to_activity_uuid)
    REFERENCES public.activities (uuid) ON DELETE SET NULL,
  ADD CONSTRAINT activities_message_length CHECK (char_length(message) BETWEEN 1 AND 280);

CREATE INDEX activities_feed_idx ON public.activities (created_at DESC, uuid DESC);
CREATE INDEX activities_user_uuid_idx ON public.activities (user_uuid);
