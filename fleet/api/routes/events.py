"""Events (what monitoring noticed) and alerts (the events still active)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import col, select

from ...models import MAX_ID, Event, EventPublic
from ..deps import SessionDep, Staff

router = APIRouter(tags=["events"])


@router.get("/events", response_model=list[EventPublic])
def list_events(
    session: SessionDep,
    user: Staff,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    device: Annotated[str | None, Query(max_length=16)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Event]:
    query = select(Event)
    if kind is not None:
        query = query.where(Event.kind == kind)
    if device is not None:
        query = query.where(Event.device == device.upper())
    return list(session.exec(query.order_by(col(Event.id).desc()).offset(offset).limit(limit)))


@router.get("/alerts", response_model=list[EventPublic])
def list_alerts(session: SessionDep, user: Staff,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Event]:
    query = select(Event).where(col(Event.active).is_(True))
    return list(session.exec(query.order_by(col(Event.id).desc()).limit(limit)))
