"""Routes: the home feed, creating and reading activities, health."""

from __future__ import annotations

import json
import uuid

from flask import Blueprint, current_app, jsonify, request, url_for
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from . import cursor as feed_cursor
from .db import DatabaseUnavailable
from .validation import validate_new_activity

bp = Blueprint("activities", __name__)


def _db():
    return current_app.extensions["cruddur_db"]


def _page_size() -> int:
    default = current_app.config["FEED_PAGE_SIZE"]
    maximum = current_app.config["FEED_MAX_PAGE_SIZE"]
    raw = request.args.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"limit must be an integer from 1 to {maximum}") from None
    if not 1 <= value <= maximum:
        raise BadRequest(f"limit must be an integer from 1 to {maximum}")
    return value


@bp.get("/api/activities/home")
def home():
    limit = _page_size()
    after = request.args.get("cursor")
    with current_app.extensions["cruddur_tracer"].start_as_current_span("home-activities") as span:
        span.set_attribute("app.feed.limit", limit)
        if after:
            try:
                created_at, row_uuid = feed_cursor.decode(after)
            except feed_cursor.InvalidCursor as exc:
                raise BadRequest(str(exc)) from None
            page = _db().query_page(
                "activities/home_after",
                {"limit": limit, "created_at": created_at, "uuid": row_uuid},
            )
        else:
            page = _db().query_page("activities/home", {"limit": limit})
        span.set_attribute("app.feed.rows", page.size)
    # PostgreSQL built the JSON; it goes to the client as is.
    response = _json_text(page.json_text)
    if page.size == limit:
        next_cursor = feed_cursor.encode(page.last_created_at, page.last_uuid)
        response.headers["X-Next-Cursor"] = next_cursor
        next_url = url_for(".home", limit=limit, cursor=next_cursor)
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return response


@bp.post("/api/activities")
def create():
    if not request.is_json:
        raise UnsupportedMediaType("send the activity as application/json")
    payload = request.get_json(silent=True)
    if payload is None and request.get_data(cache=True):
        raise BadRequest("the body is not valid JSON")
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object")
    values, errors = validate_new_activity(payload)
    if not errors:
        activity = _db().query_value("activities/create", values)
        if activity is not None:
            # The JSON text PostgreSQL built, as the feed and GET serve it.
            response = _json_text(activity, 201)
            response.headers["Location"] = url_for(".show", activity_uuid=json.loads(activity)["uuid"])
            return response
        errors = ["user_handle_unknown"]
    data = {key: payload.get(key) for key in ("handle", "message", "ttl")}
    return jsonify({"errors": errors, "data": data}), 422


@bp.get("/api/activities/<uuid:activity_uuid>")
def show(activity_uuid: uuid.UUID):
    activity = _db().query_object_json("activities/object", {"uuid": activity_uuid})
    if activity is None:
        return jsonify({"error": "not_found", "message": "no activity has this uuid"}), 404
    return _json_text(activity)


def _json_text(text: str, status: int = 200):
    return current_app.response_class(text, status=status, mimetype="application/json")


@bp.get("/api/health")
def health():
    db = _db()
    release = current_app.extensions["cruddur_release"]
    try:
        db.query_value("health")
    except DatabaseUnavailable as exc:
        body = {"status": "unavailable", "database": str(exc), "pool": db.stats(), "release": release}
        return jsonify(body), 503
    return jsonify({"status": "ok", "database": "ok", "pool": db.stats(), "release": release})
