-- A reply by the token's user to a live activity: the reply row, expiring with the activity it
-- answers. The parent's replies_count goes up in the same transaction, by the table's trigger
-- (migration 0005: the API's role may insert activities, not update them); the foreign key's
-- check locks the parent against a concurrent delete. One row comes back: the outcome, and the
-- reply as JSON text when created.
WITH author AS (
  SELECT users.uuid FROM public.users WHERE users.cognito_user_id = %(sub)s
),
parent AS (
  SELECT activities.uuid, activities.expires_at
  FROM public.activities
  WHERE activities.uuid = %(parent)s
),
activities AS (
  INSERT INTO public.activities (user_uuid, message, reply_to_activity_uuid, expires_at)
  SELECT author.uuid, %(message)s, parent.uuid, parent.expires_at
  FROM author, parent
  WHERE parent.expires_at IS NULL OR parent.expires_at > current_timestamp
  RETURNING *
)
SELECT
  CASE
    WHEN NOT EXISTS (SELECT 1 FROM author) THEN 'user_not_registered'
    WHEN NOT EXISTS (SELECT 1 FROM parent) THEN 'activity_not_found'
    WHEN NOT EXISTS (SELECT 1 FROM activities) THEN 'activity_expired'
    ELSE 'created'
  END AS outcome,
  (SELECT row_to_json(object_row)::text
   FROM (
     SELECT
/*@activities/_shape*/
     FROM activities
     JOIN public.users ON users.uuid = activities.user_uuid
   ) object_row) AS reply
