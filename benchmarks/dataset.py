"""A realistic Cruddur data set at a chosen size, made in a few set-based statements.

Rows have the shape real sign-ups and posts have: users with a display name, a handle, an email and
a Cognito sub; activities by a skewed share of the users (a few post a lot), messages of 1 to 280
characters, created over the last two days with one of the app's ttls (so about a seventh have
expired), and a tenth of them replies to an earlier activity, with the parents' replies_count
matching. 100,000 users and 2,000,000 activities is the large default.

The rows go in with the foreign keys' and the replies count's triggers off
(session_replication_role = replica, as pg_restore does): the data is consistent by construction,
and the counts are set in one UPDATE afterwards. Needs a superuser login and a migrated database.

    from dataset import fill
    fill(conn, users=100_000, activities=2_000_000)
"""

from __future__ import annotations

import time

# The app's ttls (files/api/cruddur_api/validation.py), most posts using the longer ones.
TTLS = ("30 days", "30 days", "7 days", "7 days", "7 days", "3 days", "3 days", "3 days", "1 day", "1 hour")

WORDS = ("cloud", "bootcamp", "postgres", "week", "deploy", "ansible", "coffee", "lambda", "cognito", "react",
         "flask", "today", "finally", "works", "again", "why", "is", "the", "a", "my")

USERS = """
INSERT INTO users (uuid, display_name, handle, email, cognito_user_id, created_at)
SELECT md5('user-' || n)::uuid, 'User ' || n || ' ' || (ARRAY['Brown','Bayko','Lee','Ng','Diaz'])[1 + n %% 5],
       'user' || n, 'user' || n || '@example.com', md5('sub-' || n)::uuid::text,
       now() - interval '365 days' + n * (interval '365 days' / %(users)s)
FROM generate_series(1, %(users)s) AS n
"""

# Author: a skewed pick (the cube of a uniform draw: most posts come from few users). A tenth are replies to the
# activity a few before them. uuids are derived from the row number, so a parent's is known.
ACTIVITIES = """
INSERT INTO activities (uuid, user_uuid, message, reply_to_activity_uuid, created_at, expires_at)
SELECT md5('activity-' || n)::uuid,
       md5('user-' || (1 + floor(%(users)s * power(((n::bigint * 2654435761) %% 1000003) / 1000003.0, 3))))::uuid,
       left(repeat((%(words)s::text[])[1 + n %% 20] || ' ' || (%(words)s::text[])[1 + (n / 20) %% 20] || ' ',
                   1 + (n * 7) %% 40), 1 + (n * 13) %% 280),
       CASE WHEN n %% 10 = 0 AND n > 10 THEN md5('activity-' || (n - 1 - n %% 7))::uuid END,
       created,
       created + (%(ttls)s::interval[])[1 + (n * 31) %% 10]
FROM generate_series(1, %(activities)s) AS n,
     LATERAL (SELECT now() - interval '2 days' + n * (interval '2 days' / %(activities)s)) AS c(created)
"""

REPLIES_COUNT = """
UPDATE activities a SET replies_count = r.count
FROM (SELECT reply_to_activity_uuid AS parent, count(*) AS count FROM activities
      WHERE reply_to_activity_uuid IS NOT NULL GROUP BY 1) r
WHERE a.uuid = r.parent
"""


def fill(conn, users: int = 100_000, activities: int = 2_000_000) -> float:
    """Add the data set to a migrated, empty database (conn: a superuser's, autocommit); the
    seconds it took."""
    start = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("SET session_replication_role = replica")
        cur.execute("SET maintenance_work_mem = '256MB'")
        cur.execute(USERS, {"users": users})
        cur.execute(ACTIVITIES, {"users": users, "activities": activities, "words": list(WORDS),
                                 "ttls": list(TTLS)})
        cur.execute("SET session_replication_role = origin")
        cur.execute(REPLIES_COUNT)
        cur.execute("VACUUM ANALYZE users, activities")
    return time.perf_counter() - start
