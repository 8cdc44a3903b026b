"""Routes: the home and user feeds, one activity, creating and replying (signed in), health.

Reads are public. Writes need the access token (auth.py) and name their author by it. Every
error a write can get is a bare JSON array of error codes, the list the frontend's forms render.
"""

from __future__ import annotations

import json
import uuid

from flask import Blueprint, current_app, jsonify, request, url_for
from werkzeug.exceptions import BadRequest

from . import cursor as feed_cursor
from .auth import bearer_token
from .db import DatabaseUnavailable, ReferenceGone
from .errors import ApiError
from .validation import validate_new_activity, validate_reply

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
        raise ApiError(400, "limit_invalid", f"limit must be an integer from 1 to {maximum}") from None
    if not 1 <= value <= maximum:
        raise ApiError(400, "limit_invalid", f"limit must be an integer from 1 to {maximum}")
    return value


def _feed(template: str, params: dict, span_name: str, endpoint: str, **url_values):
    """A page of a feed, first or after the request's cursor, with the next page's cursor."""
    limit = _page_size()
    after = request.args.get("cursor")
    with current_app.extensions["cruddur_tracer"].start_as_current_span(span_name) as span:
        span.set_attribute("app.feed.limit", limit)
        if after:
            try:
                created_at, row_uuid = feed_cursor.decode(after)
            except feed_cursor.InvalidCursor as exc:
                raise ApiError(400, "cursor_invalid", str(exc)) from None
            page = _db().query_page(f"{template}_after", {
                **params, "limit": limit, "created_at": created_at, "uuid": row_uuid})
        else:
            page = _db().query_page(template, {**params, "limit": limit})
        span.set_attribute("app.feed.rows", page.size)
    # PostgreSQL built the JSON; it goes to the client as is.
    response = _json_text(page.json_text)
    if page.size == limit:
        next_cursor = feed_cursor.encode(page.last_created_at, page.last_uuid)
        response.headers["X-Next-Cursor"] = next_cursor
        next_url = url_for(endpoint, limit=limit, cursor=next_cursor, **url_values)
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return response, page.size


@bp.get("/api/activities/home")
def home():
    response, _ = _feed("activities/home", {}, "home-activities", ".home")
    return response


@bp.get("/api/activities/@<handle>")
def user_feed(handle: str):
    response, size = _feed("activities/user", {"handle": handle}, "user-activities", ".user_feed",
                           handle=handle)
    # An empty page is a user with nothing (left) to show, or no such user.
    if size == 0 and not _db().query_value("users/exists", {"handle": handle}):
        raise ApiError(404, "user_not_found", "no user has this handle")
    return response


def _identity():
    """The signed-in user's identity from the request's token (401 when there is none)."""
    return current_app.extensions["cruddur_auth"].verify(bearer_token())


def _json_body() -> dict:
    if not request.is_json:
        raise ApiError(415, "body_not_json", "send the body as application/json")
    try:
        payload = request.get_json()
    except BadRequest:
        raise ApiError(400, "body_not_json", "the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "body_not_object", "the body must be a JSON object")
    return payload


@bp.post("/api/activities")
def create():
    identity = _identity()
    values, errors = validate_new_activity(_json_body())
    if errors:
        raise ApiError(422, errors, "the activity breaks these rules")
    try:
        activity = _db().query_value("activities/create", {**values, "sub": identity.sub})
    except ReferenceGone:  # the user was deleted meanwhile
        activity = None
    if activity is None:
        raise _not_registered()
    # The JSON text PostgreSQL built, as the feed and GET serve it; 200, as the frontend expects.
    response = _json_text(activity)
    response.headers["Location"] = url_for(".show", activity_uuid=json.loads(activity)["uuid"])
    return response


@bp.post("/api/activities/<uuid:activity_uuid>/reply")
def reply(activity_uuid: uuid.UUID):
    identity = _identity()
    values, errors = validate_reply(_json_body())
    if errors:
        raise ApiError(422, errors, "the reply breaks these rules")
    try:
        outcome, activity = _db().query_row("activities/reply", {
            **values, "sub": identity.sub, "parent": activity_uuid})
    except ReferenceGone:  # the activity (or the user) was deleted while the reply was written
        outcome, activity = "activity_not_found", None
    if outcome == "user_not_registered":
        raise _not_registered()
    if outcome == "activity_not_found":
        raise ApiError(404, "activity_not_found", "no activity has this uuid")
    if outcome == "activity_expired":
        raise ApiError(422, "activity_expired", "the activity has expired: it takes no more replies")
    response = _json_text(activity)
    response.headers["Location"] = url_for(".show", activity_uuid=json.loads(activity)["uuid"])
    return response


def _not_registered() -> ApiError:
    return ApiError(403, "user_not_registered",
                    "the token is valid but its user is not in the database: cognito-reconcile adds it")


@bp.get("/api/activities/<uuid:activity_uuid>")
def show(activity_uuid: uuid.UUID):
    activity = _db().query_object_json("activities/object", {"uuid": activity_uuid})
    if activity is None:
        raise ApiError(404, "activity_not_found", "no activity has this uuid")
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
