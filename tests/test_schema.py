"""The schema the migrations make, read from PostgreSQL's catalog."""

import pytest

from conftest import create_migrated_database, drop_database, query

# Columns of each foreign key, and of each index's leading key columns, as arrays of attnums.
UNSUPPORTED_FOREIGN_KEYS = """
SELECT c.conrelid::regclass::text, c.conname
FROM pg_constraint c
WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
  AND NOT EXISTS (
    SELECT FROM pg_index i
    WHERE i.indrelid = c.conrelid AND i.indisvalid AND i.indpred IS NULL
      AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
      AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)
ORDER BY 1, 2
"""


@pytest.fixture(scope="module")
def migrated(postgresql):
    name = create_migrated_database("cruddur_schema", seed=False)
    yield name
    drop_database(name)


def test_every_foreign_key_has_an_index_that_supports_it(migrated):
    """A foreign key without an index on its columns makes every delete of a referenced row scan
    the referencing table: removals grow with the square of the data. Any future key too."""
    assert query(migrated, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                           "AND connamespace = 'public'::regnamespace")[0][0] >= 2
    assert query(migrated, UNSUPPORTED_FOREIGN_KEYS) == []


def test_the_check_names_a_key_without_an_index(migrated):
    """The catalog query above is not a formality: a key added without an index is named."""
    query(migrated, "CREATE TABLE public.likes (activity_uuid uuid REFERENCES public.activities (uuid))")
    try:
        assert query(migrated, UNSUPPORTED_FOREIGN_KEYS) == [("likes", "likes_activity_uuid_fkey")]
    finally:
        query(migrated, "DROP TABLE public.likes")


def test_the_reply_lookup_of_a_delete_can_use_the_index(migrated):
    """The lookup a delete makes for the replies to the deleted activity (ON DELETE SET NULL's
    query) can be answered from the index (seq scans off: an empty table's plan is a coin toss)."""
    plan = query(migrated, "SET enable_seqscan = off; EXPLAIN (COSTS OFF) SELECT 1 FROM ONLY public.activities x "
                           "WHERE reply_to_activity_uuid = '00000000-0000-0000-0000-000000000000' "
                           "FOR KEY SHARE OF x")
    text = " ".join(row[0] for row in plan)
    assert "activities_reply_to_activity_uuid_idx" in text, text
