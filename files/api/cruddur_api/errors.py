"""Every error is a JSON response; database outages are 503 and logged without secrets."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from .db import DatabaseUnavailable, InvalidInput

log = logging.getLogger(__name__)


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        name = (exc.name or "error").lower().replace(" ", "_")
        response = jsonify({"error": name, "message": exc.description})
        response.status_code = exc.code
        # Keep what the exception says besides its body: Allow on a 405, for instance.
        for header, value in exc.get_headers():
            if header.lower() != "content-type":
                response.headers[header] = value
        return response

    @app.errorhandler(InvalidInput)
    def invalid_input(exc: InvalidInput):
        return jsonify({"error": "bad_request", "message": f"the database refused a value: {exc}"}), 400

    @app.errorhandler(DatabaseUnavailable)
    def database_unavailable(exc: DatabaseUnavailable):
        log.warning("database unavailable: %s", exc)
        response = jsonify({"error": "database_unavailable", "message": str(exc)})
        response.status_code = 503
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return jsonify({"error": "internal_error", "message": "unexpected server error"}), 500
