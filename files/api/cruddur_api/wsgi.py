"""gunicorn entry point: `gunicorn cruddur_api.wsgi:app` (one app, one pool, per worker)."""

import logging

from . import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app()
