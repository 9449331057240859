"""The outbox's writer thread and the event loop's interface to it.

The event loop only appends to an in-memory batch (under a lock). A dedicated writer thread
wakes when something arrives, lets `commit_interval_ms` of traffic gather, swaps the batch
out and commits it in one transaction. A reading is accepted when that transaction has
committed. Commit timing thus does not depend on how busy the event loop is; the loop hears
about each commit afterwards (metrics, the forwarder's wake-up).

Reads for the forwarder use a second connection in a second thread (WAL lets a reader run
beside the writer); broker acknowledgements become deletions in the next transaction.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from .metrics import Metrics
from .outbox import Batch, Outbox, OutboxError, Record, WriteResult

log = logging.getLogger("allmende.gateway.store")

RETRY_S = 1.0  # after a failed transaction (disk full, I/O error)
EVICTION_LOG_S = 10.0
RECENT_WINDOW_S = 10.0

# (session rows to upsert, (dev_eui, session_id) to delete, (dev_eui, dev_nonce) to record)
State = tuple[list[tuple[object, ...]], list[tuple[str, str]], list[tuple[str, int]]]


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
    ) -> None:
        self.outbox = outbox
        self.reader = Outbox(outbox.path, max_readings=outbox.max_readings)
        self.metrics = metrics
        self.commit_interval_s = commit_interval_s
        self.max_pending = max_pending_readings
        self.read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-read")
        self._lock = threading.Lock()
        self._signal = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batch = Batch()  # guarded by _lock
        self.acked_pending: set[int] = set()  # loop side: acknowledged, not yet deleted
        self.new_records = asyncio.Event()  # set after a commit that added records
        self._failing: str | None = None
        self._checkpoint_failing: str | None = None
        self._evicted_since_log = 0
        self._last_eviction_log = 0.0
        self.committed_total = 0
        self.max_receive_to_commit = 0.0
        self.recent_windows: deque[tuple[float, float]] = deque()  # (commit time, window)

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self) -> tuple[list[tuple[object, ...]], dict[bytes, set[int]]]:
        loop = self._loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.read_executor, self.outbox.open)
        await loop.run_in_executor(self.read_executor, self.reader.open)
        state = await loop.run_in_executor(self.read_executor, self.outbox.load_state)
        self._thread = threading.Thread(target=self._writer, name="outbox-writer", daemon=True)
        self._thread.start()
        self._update_gauges()
        return state

    async def close(self) -> None:
        """Commits what is left and closes the database."""
        if self._thread is not None:
            self._closing = True
            self._signal.set()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._thread.join, 15.0)
            self._thread = None
        if self.reader.db is not None:
            await asyncio.get_running_loop().run_in_executor(self.read_executor, self.reader.close)
        self.read_executor.shutdown(wait=True)
        if self.outbox.db is not None:
            self.outbox.close()

    # --- called on the event loop --------------------------------------------------------

    def add(self, received: float, n: int, body: str, state: State | None = None) -> None:
        """Queues one record, and the session state that goes with it, for the next commit:
        both land in the same transaction. Raises Backpressure when too many readings wait."""
        with self._lock:
            if self.batch.readings + n > self.max_pending:
                raise Backpressure(f"{self.batch.readings} readings await a commit")
            self.batch.add(received, n, body)
            if state is not None:
                self._put(state)
        if not self._signal.is_set():  # set() takes a lock and notifies: once per batch is enough
            self._signal.set()

    def put_state(self, state: State) -> None:
        """Session state (rows to upsert, sessions to delete, DevNonces) for the next commit."""
        with self._lock:
            self._put(state)
        self._signal.set()

    def _put(self, state: State) -> None:
        sessions, deleted, nonces = state
        self.batch.sessions += sessions
        self.batch.deleted_sessions += deleted
        self.batch.nonces += nonces

    def ack(self, ids: list[int]) -> None:
        """The broker acknowledged these records: delete them in the next transaction."""
        self.acked_pending.update(ids)
        with self._lock:
            self.batch.acked.extend(ids)
        self._signal.set()

    @property
    def uncommitted_readings(self) -> int:
        return self.batch.readings

    async def fetch(self, after_id: int, limit: int) -> list[Record]:
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(self.read_executor, self.reader.fetch, after_id, limit)
        if self.acked_pending:
            records = [r for r in records if r.id not in self.acked_pending]
        return records

    async def checkpoint(self) -> None:
        """A WAL checkpoint on the reader's connection and thread, off the commit path."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.read_executor, self.reader.checkpoint)
        except OutboxError as exc:
            self.metrics.inc(self.metrics.outbox_errors, exc.reason)
            if self._checkpoint_failing != exc.reason:  # once per kind of failure, not per second
                log.warning("outbox_checkpoint_failed", extra={"fields": {"error": str(exc)}})
                self._checkpoint_failing = exc.reason
        else:
            self._checkpoint_failing = None

    def oldest_age(self, now: float) -> float:
        oldest = self.outbox.oldest_received
        return 0.0 if oldest is None else max(0.0, now - oldest)

    def recent_max_window(self, now: float) -> float:
        while self.recent_windows and now - self.recent_windows[0][0] > RECENT_WINDOW_S:
            self.recent_windows.popleft()
        return max((w for _, w in self.recent_windows), default=0.0)

    # --- the writer thread ---------------------------------------------------------------

    def _writer(self) -> None:
        while True:
            self._signal.wait(1.0)
            if self._closing:
                if not (self._flush() or self._flush()):  # a second chance, then give up
                    log.error(
                        "outbox_close_uncommitted",
                        extra={"fields": {"readings": self.batch.readings}},
                    )
                return
            if not self._signal.is_set():
                continue
            # Let a batch gather for commit_interval_s after its first reading arrived; what
            # arrived during the previous transaction has waited long enough already.
            first = self.batch.first_received
            waited = max(0.0, time.time() - first) if first else 0.0  # clamped: clock steps
            gather = self.commit_interval_s - waited
            if gather > 0:
                time.sleep(gather)
            self._signal.clear()
            if not self._flush():
                time.sleep(RETRY_S)
                self._signal.set()

    def _flush(self) -> bool:
        with self._lock:
            batch, self.batch = self.batch, Batch()
        if not batch:
            return True
        started = time.perf_counter()
        try:
            result = self.outbox.write(batch)
        except OutboxError as exc:
            self._failed(batch, exc)
            return False
        self.metrics.commit_duration.observe(time.perf_counter() - started)
        self._committed(batch, result, time.time())
        return True

    def _failed(self, batch: Batch, exc: OutboxError) -> None:
        self.metrics.inc(self.metrics.outbox_errors, exc.reason)
        if self._failing != exc.reason:
            action = "kept in memory, retrying every second"
            if exc.reason == "disk_full":
                action += "; free disk space"
            log.error(
                "outbox_write_failed",
                extra={
                    "fields": {
                        "reason": exc.reason,
                        "detail": str(exc),
                        "uncommitted_readings": batch.readings,
                        "action": action,
                    }
                },
            )
            self._failing = exc.reason
        with self._lock:
            newer, self.batch = self.batch, batch
            for record in newer.records:
                batch.add(*record)
            batch.merge_state(newer)
        self.metrics.outbox_pending.set(batch.readings)

    def _committed(self, batch: Batch, result: WriteResult, now: float) -> None:
        # Runs in the writer thread; prometheus metrics and logging are thread-safe.
        if self._failing is not None:
            log.warning("outbox_write_recovered", extra={"fields": {"after": self._failing}})
            self._failing = None
        if batch.records:
            self.committed_total += result.committed_readings
            self.metrics.readings_committed.inc(result.committed_readings)
            assert batch.first_received is not None
            window = now - batch.first_received
            self.metrics.receive_to_commit.observe(window)
            self.recent_windows.append((now, window))
            if window > self.max_receive_to_commit:
                self.max_receive_to_commit = window
                self.metrics.receive_to_commit_max.set(window)
        if result.evicted_readings:
            self._note_eviction(result, now)
        self._update_gauges()
        if self._loop is not None and (batch.records or batch.acked):
            try:
                self._loop.call_soon_threadsafe(
                    self._on_loop_committed, batch.acked, bool(batch.records)
                )
            except RuntimeError:  # loop closed during shutdown
                pass

    def _on_loop_committed(self, acked: list[int], new_records: bool) -> None:
        if acked:
            self.acked_pending.difference_update(acked)
        if new_records:
            self.new_records.set()

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
