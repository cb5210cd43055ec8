"""Reading the audit log: the filters `oidc-provider audit` and `GET /admin/v1/audit` share.

Newest first, by row id (the order they were recorded). A page ends with a cursor, the
last id shown: the next page is what was recorded before it, so events added meanwhile
never shift a page.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .admin import iso_time
from .extensions import db
from .models import AuditEvent

MAX_LIMIT = 1000
DURATION = re.compile(r"^([0-9]{1,7})([smhdw])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
EVENT_PATTERN = re.compile(r"^[a-z0-9_.-]{1,64}\*?$|^\*$")


class QueryError(ValueError):
    """A filter that cannot be understood; the message names it."""


@dataclass(frozen=True)
class AuditFilter:
    user_id: str | None = None
    client_id: str | None = None
    event: str | None = None  # an event name, or a prefix ending in * ("factor.*")
    since: float | None = None  # epoch seconds
    limit: int = 50
    cursor: str | None = None


def parse_since(value: str, now: float | None = None) -> float:
    """"90s", "15m", "1h", "7d", "2w" ago, or an ISO 8601 time (UTC unless it has an offset)."""
    value = value.strip()
    found = DURATION.match(value)
    if found:
        return (now or time.time()) - int(found.group(1)) * SECONDS[found.group(2)]
    try:
        moment = datetime.fromisoformat(value)
        stamp = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    except (ValueError, OverflowError, OSError):
        raise QueryError(f"since: {value[:40]!r} is neither a duration such as 1h, 30m, 7d "
                         "nor an ISO 8601 time such as 2024-05-04T21:30:00Z") from None
    return stamp


def build_filter(user_id=None, client_id=None, event=None, since=None, limit=50, cursor=None) -> AuditFilter:
    """Check the raw values (strings from a query or the command line)."""
    if event is not None and not EVENT_PATTERN.match(event):
        raise QueryError("event: an event name such as factor.failed, or a prefix such as factor.*")
    if cursor is not None and not (cursor.isdigit() and len(cursor) <= 18):
        raise QueryError("cursor: use the next_cursor of the previous page")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit: a whole number from 1 to {MAX_LIMIT}")
    for name, value in (("user", user_id), ("client", client_id)):
        if value is not None and len(value) > 128:
            raise QueryError(f"{name}: at most 128 characters")
    return AuditFilter(user_id or None, client_id or None, None if event in (None, "*") else event,
                       parse_since(since) if since else None, limit, cursor)


def find_events(selected: AuditFilter) -> tuple[list[AuditEvent], str | None]:
    """One page of events, newest first, and the cursor of the next page (None: the last)."""
    query = db.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(selected.limit + 1)
    if selected.user_id:
        query = query.where(AuditEvent.user_id == selected.user_id)
    if selected.client_id:
        query = query.where(AuditEvent.client_id == selected.client_id)
    if selected.event and selected.event.endswith("*"):
        query = query.where(AuditEvent.event.startswith(selected.event[:-1], autoescape=True))
    elif selected.event:
        query = query.where(AuditEvent.event == selected.event)
    if selected.since is not None:
        query = query.where(AuditEvent.at >= selected.since)
    if selected.cursor:
        query = query.where(AuditEvent.id < int(selected.cursor))
    rows = list(db.session.execute(query).scalars())
    page = rows[:selected.limit]
    return page, str(page[-1].id) if len(rows) > selected.limit else None


def event_dict(row: AuditEvent) -> dict:
    return {"id": row.id, "at": iso_time(row.at, millis=True), "event": row.event, "user_id": row.user_id,
            "client_id": row.client_id, "ip": row.ip, "detail": row.detail or {}}
