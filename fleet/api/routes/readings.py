"""Readings: the normalized telemetry, by device, quantity and time range, keyset-paginated."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlmodel import col, select

from ...models import Device, Reading, ReadingPage, ReadingPublic, Role
from ..deps import ReadingReader, SessionDep

router = APIRouter(prefix="/readings", tags=["readings"])


@router.get("", response_model=ReadingPage)
def list_readings(
    session: SessionDep,
    user: ReadingReader,
    device: Annotated[str | None, Query(max_length=16)] = None,
    quantity: Annotated[str | None, Query(max_length=40)] = None,
    start: Annotated[datetime | None, Query(description="inclusive, ISO 8601")] = None,
    end: Annotated[datetime | None, Query(description="exclusive, ISO 8601")] = None,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="cursor from a page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Annotated[Literal["asc", "desc"], Query(description="by arrival; desc = newest first")]
    = "asc",
) -> ReadingPage:
    query = select(Reading)
    if user.role == Role.platform:
        # Flat-level readings are personal data: the platform never sees them one by one.
        query = query.where(col(Reading.device).not_in(
            select(Device.dev_eui).where(col(Device.flat_ref).is_not(None))))
    if device is not None:
        query = query.where(Reading.device == device.upper())
    if quantity is not None:
        query = query.where(Reading.quantity == quantity)
    if start is not None:
        query = query.where(Reading.time >= start)
    if end is not None:
        query = query.where(Reading.time < end)
    if after is not None:
        query = query.where(col(Reading.id) > after if order == "asc" else col(Reading.id) < after)
    by = col(Reading.id) if order == "asc" else col(Reading.id).desc()
    rows = list(session.exec(query.order_by(by).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return ReadingPage(items=[ReadingPublic.model_validate(r) for r in rows],
                       next_cursor=rows[-1].id if more and rows else None)
