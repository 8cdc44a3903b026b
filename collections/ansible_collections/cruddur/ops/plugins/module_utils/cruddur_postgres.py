"""What the project's own PostgreSQL modules share: their connection arguments (named as
community.postgresql names them, so one `module_defaults` entry serves both kinds), the one way
they connect, and the one way a connection failure is reported (never with the password)."""

from __future__ import annotations

import traceback

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:
    psycopg2 = None
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()
else:
    PSYCOPG2_IMPORT_ERROR = None

from ansible.module_utils.basic import missing_required_lib


def postgres_argument_spec() -> dict:
    """The login arguments, as in community.postgresql (plus the database, named `db`)."""
    return dict(
        login_host=dict(type="str", default="127.0.0.1"),
        login_port=dict(type="int", default=5432),
        login_user=dict(type="str", default="postgres"),
        login_password=dict(type="str", no_log=True, default=""),
        db=dict(type="str", required=True),
        ssl_mode=dict(type="str", default="prefer",
                      choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
        ca_cert=dict(type="path", aliases=["ssl_rootcert"]),
        connect_timeout=dict(type="int", default=10),
    )


def where(params: dict) -> str:
    """How a message names the target: database, host and port (never the login)."""
    return f"database {params['db']} at {params['login_host']}:{params['login_port']}"


def require_driver(module) -> None:
    if psycopg2 is None:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMPORT_ERROR)


def connect(params: dict, application_name: str):
    """A psycopg2 connection from the module's login arguments (autocommit off)."""
    kwargs = dict(host=params["login_host"], port=params["login_port"], user=params["login_user"],
                  password=params["login_password"], dbname=params["db"], sslmode=params["ssl_mode"],
                  connect_timeout=params["connect_timeout"], application_name=application_name)
    if params.get("ca_cert"):
        kwargs["sslrootcert"] = params["ca_cert"]
    return psycopg2.connect(**kwargs)


def connect_or_fail(module, application_name: str):
    """connect(), or fail the module naming the target and PostgreSQL's reason."""
    try:
        return connect(module.params, application_name)
    except psycopg2.OperationalError as exc:
        module.fail_json(msg=f"cannot connect to {where(module.params)}: {reason(exc)}")


# The table where cruddur_migrations records what it applied.
RECORD_TABLE = "cruddur_schema_migrations"


def table_row_counts(cursor) -> dict:
    """Exact row count of each table in schema public, read in the cursor's transaction (one
    snapshot when that is REPEATABLE READ)."""
    cursor.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1")
    tables = {}
    for (name,) in cursor.fetchall():
        cursor.execute(sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(name)))
        tables[name] = cursor.fetchone()[0]
    return tables


def applied_migrations(cursor, tables: dict) -> list:
    """Migrations recorded as applied, in order ([] without the record table)."""
    if RECORD_TABLE not in tables:
        return []
    cursor.execute(f"SELECT migration_id FROM public.{RECORD_TABLE} ORDER BY seq")
    return [row[0] for row in cursor.fetchall()]


def reason(exc: Exception) -> str:
    """The driver's message on one line (libpq never puts the password in it). libpq reports each
    attempt on a line of its own: with sslmode=prefer against a server that offers TLS, a refused
    login is tried again without it, and the same refusal comes twice. Each line once, in order."""
    lines: list[str] = []
    for line in str(exc).splitlines():
        line = line.strip()
        if line and line not in lines:
            lines.append(line)
    return "; ".join(lines) or type(exc).__name__
