"""Cognito PostConfirmation trigger: insert the confirmed user into Cruddur's `users` table.

- Bound parameters only; the SQL is read once, when the container starts.
- One connection per container, reused by warm invocations and reopened when it has gone bad.
- Safe to retry: a second invocation for the same `sub` adds no row.
- A missing attribute, or a database failure, is logged with the user's `sub` (never the
  connection URL or password) and raised, so Cognito reports the failure instead of confirming a
  user who has no row.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import psycopg2

log = logging.getLogger("cruddur.post_confirmation")
log.setLevel(logging.INFO)

INSERT_USER = Path(__file__).with_name("insert_user.sql").read_text(encoding="utf-8")

# Cognito attribute -> users column
ATTRIBUTES = {
    "name": "display_name",
    "email": "email",
    "preferred_username": "handle",
    "sub": "cognito_user_id",
}

_connection = None


class InvalidEvent(ValueError):
    """The event lacks a required user attribute or holds one PostgreSQL cannot store."""


def user_row(event: dict) -> dict:
    """The users row for a PostConfirmation event, or InvalidEvent naming what is wrong."""
    try:
        attributes = event["request"]["userAttributes"]
    except (KeyError, TypeError):
        raise InvalidEvent("the event has no request.userAttributes") from None
    if not isinstance(attributes, dict):
        raise InvalidEvent("request.userAttributes is not an object")
    missing = [name for name in ATTRIBUTES
               if not isinstance(attributes.get(name), str) or not attributes[name].strip()]
    if missing:
        raise InvalidEvent(f"missing required user attribute(s): {', '.join(missing)}")
    with_nul = [name for name in ATTRIBUTES if "\x00" in attributes[name]]
    if with_nul:
        raise InvalidEvent(f"user attribute(s) contain a NUL character: {', '.join(with_nul)}")
    return {column: attributes[name] for name, column in ATTRIBUTES.items()}


def _connect():
    global _connection
    if _connection is None or _connection.closed:
        url = os.environ.get("CONNECTION_URL")
        if not url:
            raise RuntimeError("CONNECTION_URL is not set in the function's environment")
        _connection = psycopg2.connect(
            url, connect_timeout=5,
            application_name="cruddur-post-confirmation")
        _connection.autocommit = True
    return _connection


def _discard_connection() -> None:
    global _connection
    if _connection is not None:
        try:
            _connection.close()
        except psycopg2.Error:
            pass
    _connection = None


def _insert(row: dict) -> int:
    with _connect().cursor() as cursor:
        cursor.execute(INSERT_USER, row)
        return cursor.rowcount


def _reason(exc: Exception) -> str:
    """First line of a driver error: the reason, without the connection string."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def lambda_handler(event, context):
    sub = None
    if isinstance(event, dict):
        sub = ((event.get("request") or {}).get("userAttributes") or {}).get("sub")
    try:
        row = user_row(event)
    except InvalidEvent as exc:
        log.error("post-confirmation rejected for sub=%s: %s", sub, exc)
        raise
    try:
        try:
            inserted = _insert(row)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            # The reused connection went bad (server restart, idle timeout): reopen once.
            _discard_connection()
            inserted = _insert(row)
    except psycopg2.Error as exc:
        _discard_connection()
        log.error("post-confirmation could not record sub=%s: %s", sub, _reason(exc))
        raise
    log.info("post-confirmation sub=%s %s", sub, "recorded" if inserted else "already recorded")
    return event
