"""The shared PostgreSQL helpers' error text: one line, each of libpq's attempts once."""

import psycopg2

from ansible_collections.cruddur.ops.plugins.module_utils import cruddur_postgres as shared


REFUSED = 'connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication failed for user "x"'
NO_TLS = 'connection to server at "127.0.0.1", port 5432 failed: FATAL:  no pg_hba.conf entry for host "127.0.0.1", no encryption'


def test_a_refusal_libpq_reports_for_both_attempts_is_one_line_once():
    # sslmode=prefer against a server offering TLS: libpq tries again without it, same refusal.
    assert shared.reason(psycopg2.OperationalError(f"{REFUSED}\n{REFUSED}\n")) == REFUSED


def test_different_attempts_stay_in_order_on_one_line():
    assert shared.reason(psycopg2.OperationalError(f"{REFUSED}\n{NO_TLS}\n")) == f"{REFUSED}; {NO_TLS}"


def test_an_exception_without_text_is_named_by_its_type():
    assert shared.reason(psycopg2.OperationalError("\n")) == "OperationalError"
