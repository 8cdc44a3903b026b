"""CORS for the Cruddur frontend: its origin(s) only, off unless FRONTEND_URL is set.

No credentials mode: the frontend sends its token in the Authorization header, not a cookie.

Simple requests get Access-Control-Allow-Origin (and the headers the frontend reads); a
preflight (OPTIONS with Access-Control-Request-Method) gets the route's methods from Flask's own
OPTIONS answer. Any other origin gets no CORS header at all, so the browser refuses it.
"""

from __future__ import annotations

from flask import Flask, request

EXPOSED = "X-Next-Cursor, Link, Location, Retry-After"
PREFLIGHT_MAX_AGE = "600"
ALLOWED_HEADERS = "Authorization, Content-Type"


def allowed_origins(setting: str | list | None) -> frozenset[str]:
    """FRONTEND_URL as a set of origins: one URL, a comma-separated list, or a list."""
    if not setting:
        return frozenset()
    items = setting.split(",") if isinstance(setting, str) else setting
    return frozenset(item.strip().rstrip("/") for item in items if item and item.strip())


def register(app: Flask) -> None:
    origins = allowed_origins(app.config.get("FRONTEND_URL"))
    if not origins:
        return

    @app.after_request
    def add_cors_headers(response):
        response.vary.add("Origin")
        origin = request.headers.get("Origin")
        if origin not in origins:
            return response
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response.headers["Access-Control-Allow-Methods"] = response.headers.get("Allow", "GET, POST")
            # The frontend sends its access token (even `Bearer null` signed out) and JSON bodies.
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        return response
