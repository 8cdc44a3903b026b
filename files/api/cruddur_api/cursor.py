"""Opaque keyset cursors for the home feed: the (created_at, uuid) of the last row served."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime


class InvalidCursor(ValueError):
    pass


def encode(created_at: str, row_uuid: str) -> str:
    raw = f"{created_at}|{row_uuid}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[str, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, row_uuid = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        datetime.fromisoformat(created_at)
        uuid.UUID(row_uuid)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this API issued") from exc
    return created_at, row_uuid
