"""db-purge-expired: the expired activities go, in bounded batches, while the API keeps serving."""


from conftest import SCRATCH_ENV_FILE, on_database, query, run_playbook


def setup(name):
    run = run_playbook("playbooks/db-setup.yml",
                       extra_vars={**on_database(name), "cruddur_db_env_file": SCRATCH_ENV_FILE})
    assert run.rc == 0, run.output[-3000:]


def fill(name, live, expired, replies_per_expired=0):
    """`live` activities that expire tomorrow, `expired` ones that expired an hour ago (each with
    its replies, which expire with it)."""
    query(name, """
        INSERT INTO activities (user_uuid, message, expires_at, created_at)
        SELECT (SELECT uuid FROM users WHERE handle = 'bayko'), 'live ' || i, now() + interval '1 day', now()
        FROM generate_series(1, %(live)s) AS i;
        WITH gone AS (
          INSERT INTO activities (user_uuid, message, expires_at, created_at)
          SELECT (SELECT uuid FROM users WHERE handle = 'andrewbrown'), 'expired ' || i,
                 now() - interval '1 hour', now() - interval '2 hours'
          FROM generate_series(1, %(expired)s) AS i
          RETURNING uuid, expires_at)
        INSERT INTO activities (user_uuid, message, reply_to_activity_uuid, expires_at)
        SELECT (SELECT uuid FROM users WHERE handle = 'bayko'), 'reply', gone.uuid, gone.expires_at
        FROM gone, generate_series(1, %(replies)s)""",
          {"live": live, "expired": expired, "replies": replies_per_expired})


def counts(name):
    return query(name, "SELECT count(*) FILTER (WHERE expires_at <= now()), count(*) FILTER (WHERE expires_at > now()),"
                       " count(*) FILTER (WHERE expires_at IS NULL) FROM activities")[0]


def test_check_counts_a_run_deletes_in_batches_and_the_next_finds_nothing(scratch_db_name):
    setup(scratch_db_name)
    fill(scratch_db_name, live=300, expired=250, replies_per_expired=1)
    before = counts(scratch_db_name)
    assert before[0] == 500

    check = run_playbook("playbooks/db-purge-expired.yml", "--check", extra_vars=on_database(scratch_db_name))
    assert check.rc == 0, check.output[-3000:]
    assert f"Would delete 500 expired activities from {scratch_db_name}" in " ".join(check.output.split())
    assert counts(scratch_db_name) == before

    extra = {**on_database(scratch_db_name), "cruddur_db_purge_batch_size": 120}
    run = run_playbook("playbooks/db-purge-expired.yml", extra_vars=extra)
    assert run.rc == 0 and run.changed() == 1, run.output[-3000:]
    assert f"Deleted 500 expired activities from {scratch_db_name} in 5 batches" in " ".join(run.output.split())
    # The live ones (the seed's included: it expires in 10 days) are all kept.
    assert counts(scratch_db_name) == (0, before[1], before[2])
    # Each batch was its own transaction: the deletes committed one by one.
    again = run_playbook("playbooks/db-purge-expired.yml", extra_vars=extra)
    assert again.rc == 0 and again.changed() == 0, again.output[-3000:]
    assert "Deleted 0 expired activities" in " ".join(again.output.split())


def test_a_bounded_run_leaves_the_rest_for_the_next(scratch_db_name):
    setup(scratch_db_name)
    fill(scratch_db_name, live=10, expired=100)
    extra = {**on_database(scratch_db_name), "cruddur_db_purge_batch_size": 30, "cruddur_db_purge_max_batches": 2}
    run = run_playbook("playbooks/db-purge-expired.yml", extra_vars=extra)
    assert run.rc == 0, run.output[-3000:]
    assert "Deleted 60 expired activities" in " ".join(run.output.split())
    assert "the rest goes on the next run" in " ".join(run.output.split())
    assert counts(scratch_db_name)[0] == 40


def test_rows_another_session_holds_are_skipped_not_waited_for(scratch_db_name):
    """A batch never queues behind a writer: a row locked elsewhere stays for the next run."""
    import psycopg2

    from conftest import PG

    setup(scratch_db_name)
    fill(scratch_db_name, live=0, expired=20)
    holder = psycopg2.connect(dbname=scratch_db_name, **PG)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT uuid FROM activities WHERE message = 'expired 1' FOR UPDATE")
            held = cur.fetchone()[0]
        run = run_playbook("playbooks/db-purge-expired.yml", extra_vars=on_database(scratch_db_name), timeout=120)
        assert run.rc == 0, run.output[-3000:]
        assert "Deleted 19 expired activities" in " ".join(run.output.split())
    finally:
        holder.rollback()
        holder.close()
    assert query(scratch_db_name, "SELECT uuid FROM activities WHERE expires_at <= now()") == [(held,)]
