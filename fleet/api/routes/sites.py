"""Sites: buildings, streets and areas that devices and gateways belong to; a building's
energy aggregates."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlmodel import col, select

from ... import audit, provisioning
from ...models import (
    MAX_ID,
    EnergyAggregate,
    EnergyAggregatePublic,
    Site,
    SiteCreate,
    SitePublic,
    SiteUpdate,
)
from ..deps import FleetManager, ReadingReader, RegistryReader, SessionDep

router = APIRouter(prefix="/sites", tags=["sites"])

SiteId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.get("", response_model=list[SitePublic])
def list_sites(
    session: SessionDep,
    user: RegistryReader,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Site]:
    return list(session.exec(select(Site).order_by(col(Site.id)).offset(offset).limit(limit)))


@router.post("", response_model=SitePublic, status_code=status.HTTP_201_CREATED)
def create_site(data: SiteCreate, session: SessionDep, user: FleetManager) -> Site:
    if session.exec(select(Site).where(Site.name == data.name)).first() is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"site '{data.name}' already exists")
    site = Site.model_validate(data)
    session.add(site)
    session.flush()
    audit.record(session, actor=user.name, action="site.create", entity="site",
                 entity_id=str(site.id), data=data.model_dump(mode="json"))
    session.commit()
    session.refresh(site)
    return site


@router.get("/{site_id}", response_model=SitePublic)
def get_site(site_id: SiteId, session: SessionDep, user: RegistryReader) -> Site:
    site = session.get(Site, site_id)
    if site is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"site {site_id} not found")
    return site


@router.patch("/{site_id}", response_model=SitePublic)
def update_site(site_id: SiteId, data: SiteUpdate, session: SessionDep,
                user: FleetManager) -> Site:
    site = session.get(Site, site_id)
    if site is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"site {site_id} not found")
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] != site.name and session.exec(
            select(Site).where(Site.name == changes["name"])).first() is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"site '{changes['name']}' already exists")
    provisioning.apply_changes(site, changes)
    session.add(site)
    audit.record(session, actor=user.name, action="site.update", entity="site",
                 entity_id=str(site_id), data=data.model_dump(exclude_unset=True, mode="json"))
    session.commit()
    session.refresh(site)
    return site


@router.get("/{site_id}/energy", response_model=list[EnergyAggregatePublic])
def site_energy(
    site_id: SiteId,
    session: SessionDep,
    user: ReadingReader,
    quantity: Annotated[str | None, Query(max_length=40)] = None,
    start: Annotated[datetime | None, Query(description="inclusive, ISO 8601")] = None,
    end: Annotated[datetime | None, Query(description="exclusive, ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[EnergyAggregatePublic]:
    """The building's energy per interval: sums and means over its flats, published only for
    intervals with at least the minimum number of flats (suppressed ones are left out)."""
    if session.get(Site, site_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no site {site_id}")
    query = select(EnergyAggregate).where(EnergyAggregate.site_id == site_id,
                                          col(EnergyAggregate.published).is_(True))
    if quantity is not None:
        query = query.where(EnergyAggregate.quantity == quantity)
    if start is not None:
        query = query.where(EnergyAggregate.start >= start)
    if end is not None:
        query = query.where(EnergyAggregate.start < end)
    rows = session.exec(query.order_by(col(EnergyAggregate.start),
                                       col(EnergyAggregate.quantity)).limit(limit))
    return [EnergyAggregatePublic(
        site_id=a.site_id, quantity=a.quantity, unit=a.unit, start=a.start,
        end=a.start + timedelta(seconds=a.interval_s), flats=a.flats, total=a.total or 0.0,
        mean=a.mean or 0.0) for a in rows]
