"""The event loop's side of the outbox: gathers readings and state into batched commits.

Every SQLite call runs in one dedicated thread. Readings arriving within
`commit_interval_ms` share one transaction; a reading is accepted when that transaction has
committed. Broker acknowledgements become deletions in the next transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .metrics import Metrics
from .outbox import Batch, Outbox, OutboxError, Record, WriteResult

log = logging.getLogger("allmende.gateway.store")

RETRY_S = 1.0  # after a failed transaction (disk full, I/O error)
EVICTION_LOG_S = 10.0


class Backpressure(Exception):
    """More readings wait for a commit than `max_pending_readings`: the reading is refused."""


class Store:
    def __init__(
        self,
        outbox: Outbox,
        metrics: Metrics,
        *,
        commit_interval_s: float,
        max_pending_readings: int,
        take_state: Callable[
            [], tuple[list[tuple[object, ...]], list[tuple[str, str]], list[tuple[str, int]]]
        ],
    ) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self.commit_interval_s = commit_interval_s
        self.max_pending = max_pending_readings
        self.take_state = take_state
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self.batch = Batch()
        self.acked_pending: set[int] = set()  # acknowledged, deletion not yet committed
        self.new_records = asyncio.Event()  # set after a commit that added records
        self._wake = asyncio.Event()
        self._failing: str | None = None
        self._evicted_since_log = 0
        self._last_eviction_log = 0.0
        self.committed_total = 0
        self.max_receive_to_commit = 0.0

    async def _call(self, fn: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def open(self) -> tuple[list[tuple[object, ...]], dict[bytes, set[int]]]:
        await self._call(self.outbox.open)
        state = await self._call(self.outbox.load_state)
        self._update_gauges()
        return state  # type: ignore[return-value]

    # --- called on the event loop by the ingress and the forwarder --------------------------

    def add(self, received: float, n: int, body: str) -> None:
        """Queues one record for the next commit. Raises Backpressure when too many wait."""
        if self.batch.readings + n > self.max_pending:
            raise Backpressure(f"{self.batch.readings} readings await a commit")
        self.batch.add(received, n, body)
        self._wake.set()

    def wake(self) -> None:
        """Asks for a commit soon (session state changed without new readings)."""
        self._wake.set()

    def ack(self, ids: list[int]) -> None:
        """The broker acknowledged these records: delete them in the next transaction."""
        self.acked_pending.update(ids)
        self.batch.acked.extend(ids)
        self._wake.set()

    @property
    def uncommitted_readings(self) -> int:
        return self.batch.readings

    async def fetch(self, after_id: int, limit: int) -> list[Record]:
        records: list[Record] = await self._call(self.outbox.fetch, after_id, limit)  # type: ignore[assignment]
        if self.acked_pending:
            records = [r for r in records if r.id not in self.acked_pending]
        return records

    # --- the commit loop ---------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.commit_interval_s)
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(RETRY_S)
                self._wake.set()

    async def flush(self) -> bool:
        """Commits everything gathered so far. False when the transaction failed (the batch
        is kept for the next attempt)."""
        batch, self.batch = self.batch, Batch()
        sessions, deleted, nonces = self.take_state()
        batch.sessions += sessions
        batch.deleted_sessions += deleted
        batch.nonces += nonces
        if not batch:
            return True
        try:
            result: WriteResult = await self._call(self.outbox.write, batch)  # type: ignore[assignment]
        except OutboxError as exc:
            self.metrics.inc(self.metrics.outbox_errors, exc.reason)
            if self._failing != exc.reason:
                log.error(
                    "outbox_write_failed",
                    extra={
                        "fields": {
                            "reason": exc.reason,
                            "detail": str(exc),
                            "uncommitted_readings": batch.readings,
                            "action": "kept in memory, retrying every second; free disk space"
                            if exc.reason == "disk_full"
                            else "kept in memory, retrying every second",
                        }
                    },
                )
                self._failing = exc.reason
            newer, self.batch = self.batch, batch
            for record in newer.records:
                batch.add(*record)
            batch.merge_state(newer)
            self.metrics.outbox_pending.set(batch.readings)
            return False
        if self._failing is not None:
            log.warning("outbox_write_recovered", extra={"fields": {"after": self._failing}})
            self._failing = None
        now = time.time()
        if batch.records:
            self.committed_total += result.committed_readings
            self.metrics.readings_committed.inc(result.committed_readings)
            assert batch.first_received is not None
            window = now - batch.first_received
            self.metrics.receive_to_commit.observe(window)
            if window > self.max_receive_to_commit:
                self.max_receive_to_commit = window
                self.metrics.receive_to_commit_max.set(window)
            self.new_records.set()
        if batch.acked:
            self.acked_pending.difference_update(batch.acked)
        if result.evicted_readings:
            self._note_eviction(result, now)
        self._update_gauges()
        return True

    def _note_eviction(self, result: WriteResult, now: float) -> None:
        self.metrics.outbox_evicted.inc(result.evicted_readings)
        self._evicted_since_log += result.evicted_readings
        if now - self._last_eviction_log >= EVICTION_LOG_S:
            log.warning(
                "outbox_evicted",
                extra={
                    "fields": {
                        "readings": self._evicted_since_log,
                        "policy": "oldest first",
                        "max_readings": self.outbox.max_readings,
                    }
                },
            )
            self._evicted_since_log = 0
            self._last_eviction_log = now

    def _update_gauges(self) -> None:
        self.metrics.outbox_depth.set(self.outbox.depth_readings)
        self.metrics.outbox_pending.set(self.batch.readings)

    def oldest_age(self, now: float) -> float:
        oldest = self.outbox.oldest_received
        return 0.0 if oldest is None else max(0.0, now - oldest)

    async def close(self) -> None:
        """Commits what is left and closes the database."""
        if self.outbox.db is None:  # never opened (startup failed)
            self.executor.shutdown(wait=True)
            return
        for _ in range(3):
            if await self.flush():
                break
            await asyncio.sleep(0.2)
        await self._call(self.outbox.close)
        self.executor.shutdown(wait=True)
