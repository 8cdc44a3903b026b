"""The rules for a new activity. Every broken rule is reported, not only the last one."""

from __future__ import annotations

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


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def validate_new_activity(payload: dict) -> tuple[dict, list[str]]:
    """Return (clean values, error codes) for a create-activity request body."""
    errors: list[str] = []
    message = payload.get("message")
    ttl = payload.get("ttl")
    handle = payload.get("handle")

    if _blank(message):
        errors.append("message_blank")
    elif not isinstance(message, str):
        errors.append("message_not_string")
    elif len(message) > MESSAGE_MAX_CHARS:
        errors.append("message_exceed_max_chars")

    if _blank(ttl):
        errors.append("ttl_blank")
    elif not isinstance(ttl, str) or ttl not in TTL_OFFSETS:
        errors.append("ttl_invalid")

    if _blank(handle):
        errors.append("user_handle_blank")
    elif not isinstance(handle, str):
        errors.append("user_handle_not_string")

    if errors:
        return {}, errors
    return {"message": message, "ttl": TTL_OFFSETS[ttl], "handle": handle}, []
