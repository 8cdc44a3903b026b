"""Cruddur's API: the feeds and activities, backed by PostgreSQL; writes signed in."""

from __future__ import annotations

import json
import os

from flask import Flask

from . import activities, cors, errors, tracing
from .auth import Verifier
from .db import Database
from .release import code_release

DEFAULTS = {
    "CONNECTION_URL": None,
    "DB_POOL_MIN_SIZE": 1,
    "DB_POOL_MAX_SIZE": 4,
    "DB_POOL_TIMEOUT": 3.0,
    "FEED_PAGE_SIZE": 20,
    "FEED_MAX_PAGE_SIZE": 100,
    "MAX_CONTENT_LENGTH": 16 * 1024,
    "TRACER_PROVIDER": None,
    # Who may write: access tokens of this issuer (the Cognito user pool's URL, or the local
    # issuer's name), signed by a key of its key set (a URL, a file path, or the set itself), for these app
    # clients (a list or a comma-separated string), with this many seconds of clock skew.
    "AUTH_ISSUER": "",
    "AUTH_JWKS": "",
    "AUTH_CLIENT_IDS": [],
    "AUTH_LEEWAY": 30,
    # The frontend's origin(s) allowed by CORS (one URL, comma-separated, or a list); empty: off.
    "FRONTEND_URL": "",
    # OTEL_* settings (an exporter header may carry an API key): they live in the private
    # config file, not in the service definition, and are applied before tracing starts.
    "OTEL_ENVIRONMENT": {},
}


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: configuration, tracing, the database pool, routes and error handlers.

    Without `test_config` the settings come from the JSON file named by CRUDDUR_API_CONFIG, and
    only from it: a CONNECTION_URL the user keeps exported for psql never redirects the API.
    """
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.json.sort_keys = False
    if test_config is None:
        config_path = os.environ.get("CRUDDUR_API_CONFIG")
        if config_path:
            app.config.from_file(config_path, load=json.load)
    else:
        app.config.update(test_config)
    if not app.config["CONNECTION_URL"]:
        raise RuntimeError("CONNECTION_URL is not configured (the file named by CRUDDUR_API_CONFIG)")

    otel = app.config["OTEL_ENVIRONMENT"] or {}
    not_otel = sorted(name for name in otel if not str(name).startswith("OTEL_"))
    if not_otel:
        raise RuntimeError(f"OTEL_ENVIRONMENT may only hold OTEL_* settings, not {', '.join(not_otel)}")
    os.environ.update({name: str(value) for name, value in otel.items()})
    verifier = Verifier(app.config["AUTH_ISSUER"], app.config["AUTH_JWKS"], app.config["AUTH_CLIENT_IDS"],
                        app.config["AUTH_LEEWAY"])
    tracer = tracing.get_tracer(app.config["TRACER_PROVIDER"])
    app.extensions["cruddur_tracer"] = tracer
    app.extensions["cruddur_auth"] = verifier
    database = Database(
        app.config["CONNECTION_URL"],
        min_size=int(app.config["DB_POOL_MIN_SIZE"]),
        max_size=int(app.config["DB_POOL_MAX_SIZE"]),
        timeout=float(app.config["DB_POOL_TIMEOUT"]),
        tracer=tracer,
    )
    database.open()
    app.extensions["cruddur_db"] = database
    app.extensions["cruddur_release"] = code_release()

    app.register_blueprint(activities.bp)
    errors.register(app)
    cors.register(app)
    return app
