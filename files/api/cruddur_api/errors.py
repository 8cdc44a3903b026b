"""Every error is a JSON response; database outages are 503 and logged without secrets."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from .db import DatabaseUnavailable

log = logging.getLogger(__name__)


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        name = (exc.name or "error").lower().replace(" ", "_")
        return jsonify({"error": name, "message": exc.description}), exc.code

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
