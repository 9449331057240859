"""Where a device is, for the platform: its own coordinates, else its site's."""

from __future__ import annotations

from sqlmodel import Session

from ..models import Device, Site


def position(session: Session, device: Device) -> tuple[float, float] | None:
    """(latitude, longitude) of the device, or of its site when it has none; None if neither."""
    if device.latitude is not None and device.longitude is not None:
        return device.latitude, device.longitude
    site = session.get(Site, device.site_id) if device.site_id else None
    if site is not None and site.latitude is not None and site.longitude is not None:
        return site.latitude, site.longitude
    return None
