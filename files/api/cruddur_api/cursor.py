"""Opaque keyset cursors for the home feed: the (created_at, uuid) of the last row served.

`decode` returns the parsed values (a timezone-aware datetime in UTC and a UUID), never the
strings it read: those objects are what the query binds, so anything PostgreSQL could reject
is rejected here first, as a cursor this API did not issue.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import datetime, timezone

# What `encode` writes: an ISO 8601 timestamp with a UTC offset, a bar, a canonical uuid.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}:\d{2}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class InvalidCursor(ValueError):
    pass


def encode(created_at: datetime, row_uuid: uuid.UUID) -> str:
    stamp = created_at.astimezone(timezone.utc).isoformat(timespec="microseconds")
    raw = f"{stamp}|{row_uuid}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, uuid) keyset of a cursor, or InvalidCursor."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
        stamp, row_uuid = text.split("|")
        # Only the form encode() writes: no week dates, no urn: or braced uuids.
        if not _TIMESTAMP.fullmatch(stamp) or not _UUID.fullmatch(row_uuid):
            raise ValueError("not in the issued form")
        # Bound in UTC: PostgreSQL never sees the offset the cursor was written with.
        created_at = datetime.fromisoformat(stamp).astimezone(timezone.utc)
        return created_at, uuid.UUID(row_uuid)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeError) as exc:
        raise InvalidCursor("cursor is not one this API issued") from exc
