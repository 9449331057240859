"""Sites: buildings, streets and areas that devices and gateways belong to."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlmodel import col, select

from ... import audit, provisioning
from ...models import MAX_ID, Site, SiteCreate, SitePublic, SiteUpdate
from ..deps import FleetManager, RegistryReader, SessionDep

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
