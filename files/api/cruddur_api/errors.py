"""Every error is a JSON response; database outages are 503 and logged without secrets.

Two bodies, one per kind of client:
- a write (POST) answers a bare JSON array of error codes, e.g. `["message_blank"]`: the
  frontend's forms render that list, and any other body breaks them;
- a read answers `{"error": code, "message": why}`.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from .auth import KeySetUnavailable, Unauthorized
from .db import DatabaseUnavailable, InvalidInput

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiError(Exception):
    """An answer with a status and one or more error codes."""

    def __init__(self, status: int, codes: str | list[str], description: str):
        super().__init__(description)
        self.status = status
        self.codes = [codes] if isinstance(codes, str) else list(codes)
        self.description = description


def error_response(status: int, codes: list[str], description: str, headers: dict | None = None):
    body = codes if request.method in WRITE_METHODS else {"error": codes[0], "message": description}
    response = jsonify(body)
    response.status_code = status
    for header, value in (headers or {}).items():
        response.headers[header] = value
    return response


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return error_response(exc.status, exc.codes, exc.description)

    @app.errorhandler(Unauthorized)
    def unauthorized(exc: Unauthorized):
        challenge = 'Bearer realm="cruddur"'
        if exc.code != "token_missing":
            # RFC 6750: a token was sent and refused.
            challenge += ', error="invalid_token"'
        return error_response(401, [exc.code], exc.description, {"WWW-Authenticate": challenge})

    @app.errorhandler(KeySetUnavailable)
    def key_set_unavailable(exc: KeySetUnavailable):
        log.warning("%s", exc)
        return error_response(503, ["auth_unavailable"], "tokens cannot be checked right now",
                              {"Retry-After": "5"})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        # Keep what the exception says besides its body: Allow on a 405, for instance.
        headers = {header: value for header, value in exc.get_headers() if header.lower() != "content-type"}
        return error_response(exc.code, [code], exc.description, headers)

    @app.errorhandler(InvalidInput)
    def invalid_input(exc: InvalidInput):
        return error_response(400, ["value_refused"], f"the database refused a value: {exc}")

    @app.errorhandler(DatabaseUnavailable)
    def database_unavailable(exc: DatabaseUnavailable):
        log.warning("database unavailable: %s", exc)
        return error_response(503, ["database_unavailable"], str(exc), {"Retry-After": "1"})

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, ["generic_500"], "unexpected server error")
