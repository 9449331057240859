"""Administration: users with role tokens, the audit log and its verification, counters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlmodel import col, select

from ... import audit, provisioning
from ...ingest import read_counters
from ...models import (
    MAX_ID,
    AuditEntry,
    AuditPublic,
    AuditVerification,
    Role,
    User,
    UserCreate,
    UserPublic,
    UserWithToken,
)
from ..deps import Admin, SessionDep, Staff

router = APIRouter(tags=["admin"])


@router.get("/users", response_model=list[UserPublic])
def list_users(session: SessionDep, user: Admin) -> list[User]:
    return list(session.exec(select(User).order_by(col(User.id))))


@router.post("/users", response_model=UserWithToken, status_code=status.HTTP_201_CREATED)
def create_user(data: UserCreate, session: SessionDep, user: Admin) -> UserWithToken:
    """A staff or platform user and its API token (shown once). Gateway users come with their
    gateway (POST /gateways)."""
    if data.role == Role.gateway:
        raise provisioning.ProvisioningError(
            "gateway users are created with their gateway: POST /api/v1/gateways",
            status=422, fields=("role",))
    created = provisioning.create_user(session, name=data.name, role=data.role, actor=user.name)
    session.commit()
    return created


@router.get("/audit", response_model=list[AuditPublic])
def list_audit(
    session: SessionDep,
    user: Admin,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntry]:
    query = select(AuditEntry).where(col(AuditEntry.id) > after).order_by(col(AuditEntry.id))
    return list(session.exec(query.limit(limit)))


@router.get("/audit/verify", response_model=AuditVerification)
def verify_audit(session: SessionDep, user: Admin) -> AuditVerification:
    return audit.verify(session)


@router.get("/counters", response_model=dict[str, int])
def counters(session: SessionDep, user: Staff) -> dict[str, int]:
    """Ingest and forwarding counters shared by all workers (rejected, duplicates, ...)."""
    return read_counters(session)
