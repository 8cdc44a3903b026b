-- depends: 0001_uuid_ossp
-- Cruddur's users and their short-lived activities.
CREATE TABLE public.users (
  uuid            uuid        PRIMARY KEY DEFAULT uuid_generate_v4(),
  display_name    text        NOT NULL,
  handle          text        NOT NULL,
  email           text,
  cognito_user_id text,
  created_at      timestamptz NOT NULL DEFAULT current_timestamp,
  CONSTRAINT users_handle_key UNIQUE (handle),
  CONSTRAINT users_cognito_user_id_key UNIQUE (cognito_user_id),
  CONSTRAINT users_handle_not_blank CHECK (btrim(handle) <> '')
);

CREATE TABLE public.activities (
  uuid                   uuid        PRIMARY KEY DEFAULT uuid_generate_v4(),
  user_uuid              uuid        NOT NULL
                         REFERENCES public.users (uuid) ON DELETE CASCADE,
  message                text        NOT NULL,
  replies_count          integer     NOT NULL DEFAULT 0,
  reposts_count          integer     NOT NULL DEFAULT 0,
  likes_count            integer     NOT NULL DEFAULT 0,
  reply_to_activity_uuid uuid
                         REFERENCES public.activities (uuid) ON DELETE SET NULL,
  expires_at             timestamptz,
  created_at             timestamptz NOT NULL DEFAULT current_timestamp,
  CONSTRAINT activities_message_length CHECK (char_length(message) BETWEEN 1 AND 280)
);

-- The home feed reads newest first and pages with a (created_at, uuid) keyset.
CREATE INDEX activities_feed_idx ON public.activities (created_at DESC, uuid DESC);
-- Foreign keys are not indexed by PostgreSQL itself: one for user_uuid (deletes, per-user reads).
CREATE INDEX activities_user_uuid_idx ON public.activities (user_uuid);
