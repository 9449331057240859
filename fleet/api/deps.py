"""FastAPI dependencies: database session, the caller behind a bearer token, role checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session, select

from ..models import ApiToken, Role, User
from ..security import KeyVault, hash_token
from ..settings import FleetSettings


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


def get_settings(request: Request) -> FleetSettings:
    settings: FleetSettings = request.app.state.settings
    return settings


def get_vault(request: Request) -> KeyVault:
    vault: KeyVault = request.app.state.vault
    return vault


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[FleetSettings, Depends(get_settings)]
VaultDep = Annotated[KeyVault, Depends(get_vault)]

_bearer = HTTPBearer(auto_error=False, description="an API token: `Authorization: Bearer alm_...`")


def get_current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    unauthorized = HTTPException(
        status.HTTP_401_UNAUTHORIZED, "a valid API token is required (Authorization: Bearer ...)",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized
    token = session.exec(
        select(ApiToken).where(ApiToken.token_hash == hash_token(credentials.credentials))
    ).first()
    if token is None or token.revoked:
        raise unauthorized
    user = session.get(User, token.user_id)
    if user is None or not user.active:
        raise unauthorized
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require(*roles: Role) -> Callable[[User], User]:
    """A dependency that lets only the given roles through (403 for the others)."""

    def check(user: CurrentUser) -> User:
        if user.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"role '{user.role}' may not do this (allowed: {allowed})")
        return user

    return check


# Who may do what; a gateway token additionally sees only its own devices.
RegistryReader = Annotated[User, Depends(require(Role.admin, Role.operator, Role.technician,
                                                 Role.platform, Role.gateway))]
DeviceWriter = Annotated[User, Depends(require(Role.admin, Role.operator, Role.technician))]
FleetManager = Annotated[User, Depends(require(Role.admin, Role.operator))]
ReadingReader = Annotated[User, Depends(require(Role.admin, Role.operator, Role.technician,
                                                Role.platform))]
Staff = Annotated[User, Depends(require(Role.admin, Role.operator, Role.technician))]
Admin = Annotated[User, Depends(require(Role.admin))]
GatewayUser = Annotated[User, Depends(require(Role.gateway))]
