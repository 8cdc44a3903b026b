"""The rules for a new activity. Every broken rule is reported, not only the last one."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

MESSAGE_MAX_CHARS = 280

TTL_OFFSETS = {
    "30-days": timedelta(days=30),
    "7-days": timedelta(days=7),
    "3-days": timedelta(days=3),
    "1-day": timedelta(days=1),
    "12-hours": timedelta(hours=12),
    "3-hours": timedelta(hours=3),
    "1-hour": timedelta(hours=1),
}

# PostgreSQL text cannot hold NUL, and a lone UTF-16 surrogate (valid in JSON's \uXXXX escapes)
# is not a character UTF-8 can encode.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _check_text(value: Any, field: str, errors: list[str], max_chars: int | None = None) -> None:
    if _blank(value):
        errors.append(f"{field}_blank")
    elif not isinstance(value, str):
        errors.append(f"{field}_not_string")
    elif _UNSTORABLE.search(value):
        errors.append(f"{field}_invalid_characters")
    elif max_chars is not None and len(value) > max_chars:
        errors.append(f"{field}_exceed_max_chars")


def validate_new_activity(payload: dict) -> tuple[dict, list[str]]:
    """Return (clean values, error codes) for a create-activity request body. Only `message` and
    `ttl` are read: the author is the token's user, whatever else the body carries."""
    errors: list[str] = []
    message = payload.get("message")
    ttl = payload.get("ttl")

    _check_text(message, "message", errors, MESSAGE_MAX_CHARS)

    if _blank(ttl):
        errors.append("ttl_blank")
    elif not isinstance(ttl, str) or ttl not in TTL_OFFSETS:
        errors.append("ttl_invalid")

    if errors:
        return {}, errors
    return {"message": message, "ttl": TTL_OFFSETS[ttl]}, []


def validate_reply(payload: dict) -> tuple[dict, list[str]]:
    """Return (clean values, error codes) for a reply's body: its `message` only (a reply expires
    with the activity it answers)."""
    errors: list[str] = []
    message = payload.get("message")
    _check_text(message, "message", errors, MESSAGE_MAX_CHARS)
    if errors:
        return {}, errors
    return {"message": message}, []
