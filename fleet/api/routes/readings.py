"""Readings: the normalized telemetry, by device, quantity and time range, keyset-paginated.

Readings of a flat's meter are personal data: only an admin sees them, and then with the flat's
pseudonym in place of the DevEUI (pseudonym.py); for every other role they do not exist, and
asking for such a device by name is refused (403).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from sqlmodel import Session, col, select

from ...models import Device, Reading, ReadingPage, ReadingPublic, Role
from ...pseudonym import is_pseudonym, pseudonyms
from ...settings import FleetSettings
from ..deps import ReadingReader, SessionDep, SettingsDep

router = APIRouter(prefix="/readings", tags=["readings"])


@router.get("", response_model=ReadingPage)
def list_readings(
    session: SessionDep,
    user: ReadingReader,
    settings: SettingsDep,
    device: Annotated[str | None, Query(max_length=16)] = None,
    quantity: Annotated[str | None, Query(max_length=40)] = None,
    start: Annotated[datetime | None, Query(description="inclusive, ISO 8601")] = None,
    end: Annotated[datetime | None, Query(description="exclusive, ISO 8601")] = None,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="cursor from a page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Annotated[Literal["asc", "desc"], Query(description="by arrival; desc = newest first")]
    = "asc",
) -> ReadingPage:
    flats = flat_pseudonyms(session, settings)
    query = select(Reading)
    if user.role != Role.admin:
        query = query.where(col(Reading.device).not_in(_flat_devices()))
    if device is not None:
        asked = device.upper()
        if is_pseudonym(device) and user.role == Role.admin:
            asked = next((d for d, name in flats.items() if name == device), "")
        elif asked in flats and user.role != Role.admin:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                "readings of a flat's meter are personal data: only an admin "
                                "may read them (building totals: /sites/{id}/energy)")
        query = query.where(Reading.device == asked)
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
    return ReadingPage(items=[_public(r, flats.get(r.device)) for r in rows],
                       next_cursor=rows[-1].id if more and rows else None)


def _flat_devices() -> Any:
    return select(Device.dev_eui).where(col(Device.flat_ref).is_not(None))


def flat_pseudonyms(session: Session, settings: FleetSettings) -> dict[str, str]:
    """{DevEUI: pseudonym} of every device tied to a flat."""
    rows = session.exec(select(Device.dev_eui, Device.flat_ref)
                        .where(col(Device.flat_ref).is_not(None)))
    return pseudonyms(settings.pseudonym_key, ((dev, flat or "") for dev, flat in rows))


def _public(reading: Reading, pseudonym: str | None) -> ReadingPublic:
    public = ReadingPublic.model_validate(reading)
    if pseudonym is None:
        return public
    # Nothing that names the meter: not the DevEUI, not the LoRaWAN session (its DevAddr).
    return public.model_copy(update={
        "device": pseudonym, "session": "",
        "key": f"{pseudonym}/{reading.fcnt}/{reading.quantity}"})
