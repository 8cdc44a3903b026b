"""Cognito PostConfirmation trigger: insert the confirmed user into Cruddur's `users` table.

- Only `PostConfirmation_ConfirmSignUp` writes; other sources (a confirmed password reset) return
  the event untouched.
- Bound parameters only; the SQL is read once, when the container starts.
- One connection per container, reused by warm invocations and reopened when it has gone bad.
- Every confirmed user ends up with exactly one row: a retried invocation adds nothing, and a
  handle already taken by someone else gives a deterministic one derived from it and the `sub`
  (the rule lives in insert_user.sql, shared with the reconcile chore).
- A malformed event raises InvalidEvent. A database failure is logged with the user's `sub` and
  the driver's reason (never the URL or password) and raised as SignUpNotRecorded, whose message
  is generic: Cognito shows it to the person signing up.
- Cognito waits 5 seconds for a trigger: connecting, the statement and the one retry all fit
  within TIME_BUDGET seconds.
- The connection: CONNECTION_URL (no password in it when deployed) plus, when
  DB_PASSWORD_PARAMETER names an SSM SecureString, the password read from there at cold start,
  and read again once when the database refuses it (the password was rotated). The function's
  environment holds no secret.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import psycopg2
import psycopg2.errors

log = logging.getLogger("cruddur.post_confirmation")
log.setLevel(logging.INFO)

INSERT_USER = Path(__file__).with_name("insert_user.sql").read_text(encoding="utf-8")
# Cognito attribute -> users column; the reconcile chore reads the same file.
ATTRIBUTES = json.loads(Path(__file__).with_name("attributes.json").read_text(encoding="utf-8"))

SIGN_UP = "PostConfirmation_ConfirmSignUp"

# Seconds: libpq's connect timeout (its minimum is 2), how long an unanswered write may hang,
# the statement's limit, and the whole budget (Cognito gives up after 5).
CONNECT_TIMEOUT = 2
TCP_USER_TIMEOUT_MS = 1500
STATEMENT_TIMEOUT_MS = 1000
TIME_BUDGET = 4.0
# SSM's connect and read timeouts, one attempt: the worst case stays inside the budget.
SSM_TIMEOUT = 1
# A retry starts only when this much of the budget is left: a full connect plus the statement.
RETRY_NEEDS = CONNECT_TIMEOUT + STATEMENT_TIMEOUT_MS / 1000

GENERIC_FAILURE = "Your account could not be set up just now. Please try again in a moment."

_connection = None
_password = None
_ssm = None


class InvalidEvent(ValueError):
    """The event is not a PostConfirmation event with the user attributes the table needs."""


class SignUpNotRecorded(RuntimeError):
    """The user could not be recorded; the message is safe to show to the person signing up."""


def user_row(event) -> dict:
    """The users row for a PostConfirmation event, or InvalidEvent naming what is wrong."""
    if not isinstance(event, dict):
        raise InvalidEvent("the event is not an object")
    request = event.get("request")
    if not isinstance(request, dict):
        raise InvalidEvent("the event's request is not an object")
    attributes = request.get("userAttributes")
    if not isinstance(attributes, dict):
        raise InvalidEvent("request.userAttributes is missing or not an object")
    missing = [name for name in ATTRIBUTES
               if not isinstance(attributes.get(name), str) or not attributes[name].strip()]
    if missing:
        raise InvalidEvent(f"missing required user attribute(s): {', '.join(missing)}")
    unstorable = [name for name in ATTRIBUTES if _unstorable(attributes[name])]
    if unstorable:
        raise InvalidEvent(f"user attribute(s) hold characters that cannot be stored: {', '.join(unstorable)}")
    return {column: attributes[name] for name, column in ATTRIBUTES.items()}


def _unstorable(text: str) -> bool:
    """NUL (PostgreSQL text cannot hold it) or a lone surrogate (UTF-8 cannot encode it)."""
    return "\x00" in text or any("\ud800" <= char <= "\udfff" for char in text)


def _password_from_ssm(refresh: bool = False) -> str | None:
    """The password kept in SSM (DB_PASSWORD_PARAMETER), cached for the container's life."""
    global _password, _ssm
    name = os.environ.get("DB_PASSWORD_PARAMETER")
    if not name:
        return None
    if _password is None or refresh:
        if _ssm is None:
            import boto3  # in the Lambda runtime; only needed when the password is in SSM
            from botocore.config import Config

            # At most 2 s, no retry: with the database's connect timeout (2 s) the worst case stays
            # inside the handler's 4 s budget and Cognito's 5 s wait.
            _ssm = boto3.client("ssm", config=Config(connect_timeout=SSM_TIMEOUT, read_timeout=SSM_TIMEOUT,
                                                     retries={"total_max_attempts": 1}))
        _password = _ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    return _password


def _open(url: str, password: str | None):
    return psycopg2.connect(
        url, connect_timeout=CONNECT_TIMEOUT, tcp_user_timeout=TCP_USER_TIMEOUT_MS,
        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        application_name="cruddur-post-confirmation",
        **({"password": password} if password is not None else {}))


def _connect():
    global _connection
    if _connection is None or _connection.closed:
        url = os.environ.get("CONNECTION_URL")
        if not url:
            raise RuntimeError("CONNECTION_URL is not set in the function's environment")
        password = _password_from_ssm()
        try:
            _connection = _open(url, password)
        except psycopg2.OperationalError as exc:
            if password is None or not _password_refused(exc):
                raise
            # Rotated since this container read it: read it again, once (a refusal is quick).
            _connection = _open(url, _password_from_ssm(refresh=True))
        _connection.autocommit = True
    return _connection


def _password_refused(exc: Exception) -> bool:
    return isinstance(exc, psycopg2.OperationalError) and "password authentication failed" in str(exc)


def _discard_connection() -> None:
    global _connection
    if _connection is not None:
        try:
            _connection.close()
        except psycopg2.Error:
            pass
    _connection = None


def _insert(row: dict) -> str | None:
    """The handle recorded, or None when this sub was already recorded."""
    with _connect().cursor() as cursor:
        cursor.execute(INSERT_USER, row)
        recorded = cursor.fetchone()
    return recorded[0] if recorded else None


def _insert_within_budget(row: dict, started: float) -> str | None:
    try:
        return _insert(row)
    except (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.errors.UniqueViolation) as exc:
        # A reused connection that went bad (server restart, idle timeout), or another sign-up
        # that took the same handle a moment ago: one more try, if the budget allows it.
        if not isinstance(exc, psycopg2.errors.UniqueViolation):
            _discard_connection()
        if TIME_BUDGET - (time.monotonic() - started) < RETRY_NEEDS:
            raise
        return _insert(row)


def _reason(exc: Exception) -> str:
    """First line of a driver error: the reason, without the connection string."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def lambda_handler(event, context):
    started = time.monotonic()
    source = event.get("triggerSource") if isinstance(event, dict) else None
    if isinstance(source, str) and source != SIGN_UP:
        log.info("post-confirmation: %s is not a sign-up; nothing to record", source)
        return event
    sub = None
    try:
        row = user_row(event)
        sub = row["cognito_user_id"]
        if source is None:
            raise InvalidEvent("the event has no triggerSource")
    except InvalidEvent as exc:
        log.error("post-confirmation rejected for sub=%s: %s", sub, exc)
        raise
    try:
        recorded = _insert_within_budget(row, started)
    except psycopg2.Error as exc:
        _discard_connection()
        log.error("post-confirmation could not record sub=%s: %s", sub, _reason(exc))
        raise SignUpNotRecorded(GENERIC_FAILURE) from None
    except Exception as exc:  # noqa: BLE001 - SSM unreachable or refusing: same answer to Cognito
        _discard_connection()
        log.error("post-confirmation could not record sub=%s: %s: %s", sub, type(exc).__name__, exc)
        raise SignUpNotRecorded(GENERIC_FAILURE) from None
    if recorded is None:
        log.info("post-confirmation sub=%s already recorded", sub)
    elif recorded != row["handle"]:
        log.warning("post-confirmation sub=%s: handle %r is taken; recorded as %r", sub, row["handle"], recorded)
    else:
        log.info("post-confirmation sub=%s recorded", sub)
    return event
