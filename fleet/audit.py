"""Append-only, hash-chained audit log: every change the fleet makes is one entry."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from .models import AuditEntry, AuditVerification, Counter, utcnow

GENESIS = "0" * 64
AUDIT_COUNTER = "audit_entries"


def _digest(prev_hash: str, entry: AuditEntry) -> str:
    body = json.dumps(
        {"time": entry.time.isoformat(), "actor": entry.actor, "action": entry.action,
         "entity": entry.entity, "entity_id": entry.entity_id, "data": entry.data},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def record(session: Session, *, actor: str, action: str, entity: str, entity_id: str,
           data: dict[str, Any] | None = None) -> AuditEntry:
    """Append one entry in the caller's transaction (committed with the change it records)."""
    # Writers take turns on the chain: this row update holds SQLite's write lock or the
    # PostgreSQL row lock until commit, so two entries never claim the same predecessor.
    session.execute(sa.update(Counter).where(col(Counter.name) == AUDIT_COUNTER)
                    .values(value=Counter.value + 1))
    last = session.exec(select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(1)).first()
    prev = last.hash if last else GENESIS
    entry = AuditEntry(time=utcnow().replace(microsecond=0), actor=actor, action=action,
                       entity=entity, entity_id=entity_id, data=data or {}, prev_hash=prev,
                       hash="")
    entry.hash = _digest(prev, entry)
    session.add(entry)
    return entry


def verify(session: Session) -> AuditVerification:
    """Recompute the chain; the first entry whose hash or link does not match is reported."""
    prev = GENESIS
    count = 0
    for entry in session.exec(select(AuditEntry).order_by(col(AuditEntry.id))):
        count += 1
        if entry.prev_hash != prev or _digest(prev, entry) != entry.hash:
            return AuditVerification(ok=False, entries=count, first_bad_id=entry.id)
        prev = entry.hash
    return AuditVerification(ok=True, entries=count)
