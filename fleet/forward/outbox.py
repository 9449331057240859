"""The platform outbox, drained by one forwarder per target: claim, retry with backoff,
dead-letter, count. Each target (SensorThings, NGSI-LD; readings or building energy
aggregates) only says how to deliver a batch.

Readings enter the outbox in the same transaction that stores them; a forwarder drains its
target's items in the background, so a dead platform never blocks ingest. An item is either
delivered (deleted), retried later (the platform is down or answered 5xx/429: exponential
backoff up to `forward_max_attempts`), or dead (refused for good: kept with its reason).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

import httpx
import sqlalchemy as sa
from sqlmodel import Session, col, select

from ..ingest import bump_counters
from ..models import EnergyAggregate, OutboxItem, Reading, utcnow
from ..settings import FleetSettings

log = logging.getLogger(__name__)


class PlatformUnavailable(Exception):
    """The platform could not be reached or answered 5xx: retry later, the items stay pending."""


class PlatformRejected(Exception):
    """The platform refused something for good (4xx): the items that need it are dead."""


@dataclass
class ForwardResult:
    delivered: int = 0
    dead: int = 0
    retrying: int = 0

    @property
    def handled(self) -> int:
        return self.delivered + self.dead + self.retrying


# What an outbox item names (its `reading_id`): a reading, or a building's energy aggregate.
RecordT = TypeVar("RecordT", Reading, EnergyAggregate)


@dataclass
class Pending(Generic[RecordT]):
    """One outbox item with its record, as a target's `deliver` sees it."""

    item: OutboxItem
    record: RecordT


FORWARD_BACKOFF_MAX_S = 300  # a platform back after an outage gets its backlog within minutes


def is_transient(status_code: int) -> bool:
    """A status that says "not now" rather than "never": retry those."""
    return status_code >= 500 or status_code == 429


class OutboxForwarder(Generic[RecordT]):
    """Drains the outbox of `target`, whose items name rows of `source`; subclasses implement
    `deliver`. `forward_once()` is one pass, `run()` loops until cancelled."""

    target: str = ""
    source: type[Any] = Reading

    def __init__(self, engine: sa.Engine, settings: FleetSettings, *,
                 http: httpx.Client | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.http = http or httpx.Client(timeout=30)

    async def run(self, *, idle_s: float = 1.0) -> None:
        """Forward until cancelled; sleeps while the outbox is empty or the platform is down."""
        while True:
            try:
                result = await asyncio.to_thread(self.forward_once)
            except sa.exc.OperationalError as exc:
                log.warning("%s forwarder cannot read the outbox: %s", self.target, exc)
                result = ForwardResult()
            except Exception:
                # Whatever went wrong in this pass, the outbox is intact (its transaction was
                # not committed): say so and try again, never end the task.
                log.exception("%s forwarder pass failed; retrying in %s s", self.target, idle_s)
                result = ForwardResult()
            if result.delivered == 0:
                await asyncio.sleep(idle_s)

    def forward_once(self, *, limit: int = 1000) -> ForwardResult:
        """Deliver up to `limit` due items in one transaction; returns what became of them."""
        result = ForwardResult()
        with Session(self.engine) as session:
            pairs = session.exec(
                select(OutboxItem, self.source)
                .join(self.source, col(self.source.id) == col(OutboxItem.reading_id))
                .where(OutboxItem.target == self.target, OutboxItem.status == "pending",
                       col(OutboxItem.next_attempt) <= utcnow())
                .order_by(col(OutboxItem.id)).limit(limit)
            ).all()
            if not pairs:
                return result
            rows: list[Pending[RecordT]] = [Pending(item, record) for item, record in pairs]
            self.deliver(session, rows, result)
            for row in rows:
                if row.item.status == "delivered":
                    session.delete(row.item)
                else:
                    session.add(row.item)
            bump_counters(session, {f"forwarded_{self.target}": result.delivered,
                                    f"dead_{self.target}": result.dead})
            session.commit()
        return result

    def deliver(self, session: Session, rows: list[Pending[RecordT]],
                result: ForwardResult) -> None:
        """Send `rows` and mark each one with `delivered`, `retry` or `dead`."""
        raise NotImplementedError

    # --- what becomes of an item -----------------------------------------------------------

    def delivered(self, rows: list[Pending[RecordT]], result: ForwardResult) -> None:
        for row in rows:
            row.item.status = "delivered"
        result.delivered += len(rows)

    def retry(self, rows: list[Pending[RecordT]], reason: str, result: ForwardResult) -> None:
        """Try again later, with exponential backoff; dead after too many attempts."""
        for row in rows:
            item = row.item
            item.attempts += 1
            item.last_error = reason[:1000]
            if item.attempts >= self.settings.forward_max_attempts:
                item.status = "dead"
                result.dead += 1
            else:
                backoff = min(2 ** min(item.attempts, 16), FORWARD_BACKOFF_MAX_S)
                item.next_attempt = utcnow() + timedelta(seconds=backoff)
                result.retrying += 1

    def dead(self, rows: list[Pending[RecordT]], reason: str, result: ForwardResult) -> None:
        """Refused for good: never retried, kept with the reason for a person to look at."""
        for row in rows:
            row.item.attempts += 1
            row.item.status = "dead"
            row.item.last_error = reason[:1000]
        result.dead += len(rows)
