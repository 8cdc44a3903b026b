"""The API's one owner of the database: a psycopg 3 connection pool and the SQL templates."""

from __future__ import annotations

import atexit
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, NamedTuple
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).with_name("sql")

WRAP_OBJECT = "SELECT row_to_json(object_row)::text\nFROM (\n{template}\n) object_row"
# A feed page as JSON text (passed to the client untouched) plus the keyset of its last row.
# Both aggregates read the page's rows in the same order.
WRAP_PAGE = (
    "SELECT COALESCE(array_to_json(array_agg(row_to_json(page_row))), '[]'::json)::text,\n"
    "       count(*),\n"
    "       (array_agg(page_row.created_at))[count(*)],\n"
    "       (array_agg(page_row.uuid))[count(*)]\n"
    "FROM (\n{template}\n) page_row"
)


class Page(NamedTuple):
    json_text: str
    size: int
    last_created_at: datetime | None
    last_uuid: UUID | None


class DatabaseUnavailable(Exception):
    """The database cannot be reached (down, refusing connections, or the pool is exhausted)."""


class InvalidInput(ValueError):
    """PostgreSQL (or the driver, before sending) refused a value: the client's input is bad."""


class ReferenceGone(Exception):
    """A row the statement refers to was deleted by another session between the statement's read
    and its foreign key's check (a reply to an activity the purge removes just then)."""


# A fragment (a file whose name starts with "_") is included where a template (or another
# fragment) says /*@name*/.
INCLUDE = re.compile(r"/\*@([\w/]+)\*/")


def load_templates(sql_dir: Path) -> dict[str, str]:
    """Read every `.sql` file under `sql_dir` once, keyed by its path without the suffix, with
    the fragments it includes expanded. Fragments are not templates of their own."""
    texts, fragments = {}, {}
    for path in sorted(sql_dir.rglob("*.sql")):
        name = path.relative_to(sql_dir).with_suffix("").as_posix()
        text = path.read_text(encoding="utf-8").strip().rstrip(";")
        (fragments if path.name.startswith("_") else texts)[name] = text
    if not texts:
        raise RuntimeError(f"no SQL templates found under {sql_dir}")

    def expand(text: str, seen: tuple[str, ...] = ()) -> str:
        def include(match: re.Match) -> str:
            name = match.group(1)
            if name not in fragments:
                raise RuntimeError(f"SQL fragment {name} is not under {sql_dir}")
            if name in seen:
                raise RuntimeError(f"SQL fragment {name} includes itself")
            return expand(fragments[name], (*seen, name))

        return INCLUDE.sub(include, text)

    return {name: expand(text) for name, text in texts.items()}


class Database:
    """Pool plus templates. JSON is built by PostgreSQL (row_to_json / array_to_json)."""

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int,
        max_size: int,
        timeout: float,
        tracer,
        sql_dir: Path = SQL_DIR,
    ) -> None:
        self.templates = load_templates(sql_dir)
        self.statements = {
            "object": {n: WRAP_OBJECT.format(template=t) for n, t in self.templates.items()},
            "page": {n: WRAP_PAGE.format(template=t) for n, t in self.templates.items()},
            "value": dict(self.templates),
        }
        self.tracer = tracer
        self.pool = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            name="cruddur-api",
            kwargs={"autocommit": True, "application_name": "cruddur-api"},
            # A connection is checked as it leaves the pool, so a restarted server costs no
            # failed request: broken connections are replaced instead of handed out.
            check=ConnectionPool.check_connection,
            open=False,
        )

    def open(self) -> None:
        # Do not wait for the server: the API starts (and /api/health reports 503) while the
        # database is down, and the pool connects as soon as it is back.
        self.pool.open(wait=False)
        atexit.register(self.close)

    def close(self) -> None:
        if not self.pool.closed:
            self.pool.close()

    def stats(self) -> dict[str, int]:
        stats = self.pool.get_stats()
        keys = ("pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting")
        return {key: stats.get(key, 0) for key in keys}

    def _fetch_row(self, kind: str, name: str, params: Mapping[str, Any] | None) -> tuple | None:
        sql = self.statements[kind][name]
        with self.tracer.start_as_current_span(f"sql {name}") as span:
            span.set_attribute("db.system", "postgresql")
            span.set_attribute("db.operation.name", name)
            try:
                with self.pool.connection() as conn:
                    row = conn.execute(sql, params).fetchone()
            except PoolTimeout as exc:
                span.record_exception(exc)
                raise DatabaseUnavailable("no database connection available") from exc
            except psycopg.OperationalError as exc:
                span.record_exception(exc)
                raise DatabaseUnavailable(_describe(exc)) from exc
            except psycopg.errors.ForeignKeyViolation as exc:
                span.record_exception(exc)
                raise ReferenceGone(_describe(exc)) from exc
            except psycopg.DataError as exc:
                # A value PostgreSQL cannot take (out of range, NUL in text, ...): the input's fault.
                span.record_exception(exc)
                raise InvalidInput(_describe(exc)) from exc
            except UnicodeEncodeError as exc:
                span.record_exception(exc)
                raise InvalidInput("a value holds characters that cannot be stored") from exc
        return row

    def _fetch_one_value(self, kind: str, name: str, params: Mapping[str, Any] | None) -> Any:
        row = self._fetch_row(kind, name, params)
        return None if row is None else row[0]

    def query_page(self, name: str, params: Mapping[str, Any] | None = None) -> Page:
        """A page of a feed template: its JSON array as text, its size and its last row's keyset."""
        json_text, size, last_created_at, last_uuid = self._fetch_row("page", name, params)
        return Page(json_text, size, last_created_at, last_uuid)

    def query_object_json(self, name: str, params: Mapping[str, Any] | None = None) -> str | None:
        """One row of a template as JSON text built by PostgreSQL (None when there is no row)."""
        return self._fetch_one_value("object", name, params)

    def query_value(self, name: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._fetch_one_value("value", name, params)

    def query_row(self, name: str, params: Mapping[str, Any] | None = None) -> tuple | None:
        return self._fetch_row("value", name, params)


def _describe(exc: psycopg.Error) -> str:
    """A one-line reason that never carries the connection string."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag else None
    return primary or type(exc).__name__
