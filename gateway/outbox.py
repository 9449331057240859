"""Durable outbox: SQLite in WAL mode holding every accepted reading until the broker has it.

One `Outbox` object owns one connection and is used from exactly one thread (the gateway runs
it in a single-thread executor, so no SQLite call ever blocks the event loop). Each `write`
is one transaction: new records, deletions of broker-acknowledged records, session state and
used DevNonces commit together, so after a crash the frame counters match the readings kept.

Bounded size, eviction policy: when more than `max_readings` readings wait, the *oldest*
records are deleted in the same transaction (fresh data is worth more to operations than
data that has waited longest; the fleet sees the gap by frame counter). Every eviction is
counted and returned to the caller, which logs it and exports a metric.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
BACKSTOP_CHECKPOINT_PAGES = 16384  # 64 MB of WAL: only if `checkpoint` is not being called

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused, the forwarder's
                                           -- cursor stays valid after the table empties
    received REAL NOT NULL,                -- receive time (unix seconds)
    n INTEGER NOT NULL,                    -- readings in this record
    body TEXT NOT NULL                     -- readings.record() JSON
);
CREATE TABLE IF NOT EXISTS sessions (
    dev_eui TEXT NOT NULL,
    session_id TEXT NOT NULL,
    dev_addr INTEGER NOT NULL,
    dev_nonce INTEGER,
    nwk_s_key BLOB NOT NULL,
    app_s_key BLOB NOT NULL,
    fcnt_up INTEGER,
    fcnt_down INTEGER NOT NULL,
    rx1_delay INTEGER NOT NULL,
    rx1_dr_offset INTEGER NOT NULL,
    rx2_dr INTEGER NOT NULL,
    created REAL NOT NULL,
    active INTEGER NOT NULL,
    tx_power_index INTEGER NOT NULL,
    PRIMARY KEY (dev_eui, session_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dev_nonces (
    dev_eui TEXT NOT NULL,
    dev_nonce INTEGER NOT NULL,
    PRIMARY KEY (dev_eui, dev_nonce)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""

_UPSERT_SESSION = """
INSERT OR REPLACE INTO sessions (dev_eui, session_id, dev_addr, dev_nonce, nwk_s_key, app_s_key,
    fcnt_up, fcnt_down, rx1_delay, rx1_dr_offset, rx2_dr, created, active, tx_power_index)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


class OutboxError(Exception):
    """A write that did not commit; `reason` is "disk_full", "io_error", "corrupt" or "locked".
    Nothing of the batch was stored: the caller keeps it and retries."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _classify(exc: sqlite3.Error) -> OutboxError:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == sqlite3.SQLITE_FULL:
        return OutboxError("disk_full", str(exc))
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return OutboxError("locked", str(exc))
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return OutboxError("corrupt", str(exc))
    return OutboxError("io_error", str(exc))


@dataclass
class Batch:
    """Everything one transaction writes."""

    records: list[tuple[float, int, str]] = field(default_factory=list)  # (received, n, body)
    readings: int = 0
    first_received: float | None = None
    acked: list[int] = field(default_factory=list)  # outbox ids the broker acknowledged
    sessions: list[tuple[object, ...]] = field(default_factory=list)
    deleted_sessions: list[tuple[str, str]] = field(default_factory=list)
    nonces: list[tuple[str, int]] = field(default_factory=list)

    def add(self, received: float, n: int, body: str) -> None:
        self.records.append((received, n, body))
        self.readings += n
        if self.first_received is None:
            self.first_received = received

    def merge_state(self, other: Batch) -> None:
        """Takes over `other`'s non-record parts (used when a failed batch is retried)."""
        self.acked = other.acked + self.acked
        self.sessions = other.sessions + self.sessions
        self.deleted_sessions = other.deleted_sessions + self.deleted_sessions
        self.nonces = other.nonces + self.nonces

    def __bool__(self) -> bool:
        return bool(
            self.records or self.acked or self.sessions or self.deleted_sessions or self.nonces
        )


@dataclass(frozen=True)
class WriteResult:
    committed_readings: int
    deleted_readings: int
    evicted_readings: int
    evicted_records: int


@dataclass(frozen=True)
class Record:
    id: int
    received: float
    n: int
    body: str


class Outbox:
    """The SQLite outbox. Not thread-safe by design: one thread owns it."""

    def __init__(
        self,
        path: Path,
        *,
        max_readings: int,
        synchronous: str = "FULL",
        max_db_pages: int = 0,
    ) -> None:
        self.path = Path(path)
        self.max_readings = max_readings
        self.synchronous = synchronous.upper()
        self.max_db_pages = max_db_pages
        self.db: sqlite3.Connection | None = None
        self.depth_readings = 0
        self.depth_records = 0
        self.oldest_received: float | None = None

    def open(self) -> None:
        """Opens (creating) the database; the directory and file are private to the gateway
        user, since the sessions table holds keys."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = not self.path.exists()
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if fresh:
            os.chmod(self.path, 0o600)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute("PRAGMA busy_timeout=5000")
            # Checkpoints run beside the writer (`checkpoint`, every second): one inside a
            # commit would hold up the readings of the next. This is only the backstop.
            db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
            if self.max_db_pages:
                db.execute(f"PRAGMA max_page_count={int(self.max_db_pages)}")
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
            )
            count, total = db.execute("SELECT COUNT(*), COALESCE(SUM(n), 0) FROM outbox").fetchone()
        except sqlite3.Error as exc:
            db.close()
            raise _classify(exc) from exc
        self.db = db
        self.depth_records, self.depth_readings = int(count), int(total)
        self._refresh_oldest()

    def close(self) -> None:
        if self.db is not None:
            try:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self.db.close()
            self.db = None

    def checkpoint(self) -> None:
        """Copies committed WAL pages into the database without blocking the writer
        (PASSIVE). Raises OutboxError; the data stays safe in the WAL either way."""
        try:
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            raise _classify(exc) from exc

    def _conn(self) -> sqlite3.Connection:
        if self.db is None:
            raise RuntimeError("outbox is not open")
        return self.db

    def _refresh_oldest(self) -> None:
        row = self._conn().execute("SELECT received FROM outbox ORDER BY id LIMIT 1").fetchone()
        self.oldest_received = None if row is None else float(row[0])

    def load_state(self) -> tuple[list[tuple[object, ...]], dict[bytes, set[int]]]:
        """Persisted sessions (rows for network.Session.from_snapshot) and used DevNonces."""
        db = self._conn()
        sessions = db.execute(
            "SELECT dev_eui, session_id, dev_addr, dev_nonce, nwk_s_key, app_s_key, fcnt_up,"
            " fcnt_down, rx1_delay, rx1_dr_offset, rx2_dr, created, active, tx_power_index"
            " FROM sessions ORDER BY created"
        ).fetchall()
        nonces: dict[bytes, set[int]] = {}
        for eui, nonce in db.execute("SELECT dev_eui, dev_nonce FROM dev_nonces"):
            nonces.setdefault(bytes.fromhex(eui), set()).add(int(nonce))
        return [tuple(row) for row in sessions], nonces

    def write(self, batch: Batch) -> WriteResult:
        """Commits one batch in one transaction (or nothing: raises OutboxError)."""
        db = self._conn()
        deleted = evicted = evicted_records = deleted_records = 0
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for low, high in _runs(sorted(batch.acked)):
                    count, total = db.execute(
                        "SELECT COUNT(*), COALESCE(SUM(n), 0) FROM outbox WHERE id BETWEEN ? AND ?",
                        (low, high),
                    ).fetchone()
                    db.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", (low, high))
                    deleted += total
                    deleted_records += count
                _insert_many(db, "INSERT INTO outbox (received, n, body) VALUES ", 3, batch.records)
                _insert_many(db, _UPSERT_SESSION, 14, batch.sessions)
                for dev_eui, session_id in batch.deleted_sessions:
                    db.execute(
                        "DELETE FROM sessions WHERE dev_eui = ? AND session_id = ?",
                        (dev_eui, session_id),
                    )
                _insert_many(
                    db,
                    "INSERT OR IGNORE INTO dev_nonces (dev_eui, dev_nonce) VALUES ",
                    2,
                    batch.nonces,
                )
                excess = self.depth_readings - deleted + batch.readings - self.max_readings
                if excess > 0:
                    evicted, evicted_records = self._evict(db, excess)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _classify(exc) from exc
        self.depth_readings += batch.readings - deleted - evicted
        self.depth_records += len(batch.records) - deleted_records - evicted_records
        if deleted_records or evicted_records or self.oldest_received is None:
            self._refresh_oldest()
        return WriteResult(batch.readings, deleted, evicted, evicted_records)

    @staticmethod
    def _evict(db: sqlite3.Connection, excess: int) -> tuple[int, int]:
        """Deletes the oldest records holding at least `excess` readings."""
        # n >= 1 per record, so the first `excess` records always hold enough readings.
        row = db.execute(
            "SELECT id FROM (SELECT id, SUM(n) OVER (ORDER BY id) AS upto"
            " FROM (SELECT id, n FROM outbox ORDER BY id LIMIT ?)) WHERE upto >= ? LIMIT 1",
            (excess, excess),
        ).fetchone()
        if row is None:  # fewer readings than `excess` in all: take everything
            row = db.execute("SELECT MAX(id) FROM outbox").fetchone()
            if row[0] is None:
                return 0, 0
        count, total = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(n), 0) FROM outbox WHERE id <= ?", row
        ).fetchone()
        db.execute("DELETE FROM outbox WHERE id <= ?", row)
        return total, count

    def fetch(self, after_id: int, limit: int) -> list[Record]:
        """Up to `limit` records with id > after_id, oldest first."""
        # One aggregate row instead of one row per record: each row a cursor steps through
        # lets go of the GIL and has to win it back from the busy event loop.
        ids, received, ns, bodies = (
            self._conn()
            .execute(
                "SELECT group_concat(id, ','), group_concat(received, ','), group_concat(n, ','),"
                " group_concat(body, char(30)) FROM"
                " (SELECT id, received, n, body FROM outbox WHERE id > ? ORDER BY id LIMIT ?)",
                (after_id, limit),
            )
            .fetchone()
        )
        if ids is None:
            return []
        return [
            Record(int(i), float(t), int(n), body)
            for i, t, n, body in zip(
                ids.split(","),
                received.split(","),
                ns.split(","),
                bodies.split("\x1e"),
                strict=True,
            )
        ]


_ROWS_PER_STATEMENT = 200


def _insert_many(
    db: sqlite3.Connection, sql: str, width: int, rows: Sequence[tuple[object, ...]]
) -> None:
    """Inserts rows with multi-row VALUES statements: one SQLite step per 200 rows.

    executemany() steps once per row, and every step releases the GIL and must reacquire it
    from the event-loop thread; under load that costs a switch interval (5 ms) per row.
    """
    sql = sql.strip()
    if sql.upper().endswith("VALUES"):
        sql += " "
    else:  # a statement written with one "(?, ...)" group: keep its head
        sql = sql[: sql.upper().rindex("VALUES") + len("VALUES")] + " "
    group = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        params = [value for row in chunk for value in row]
        db.execute(sql + ",".join([group] * len(chunk)), params)


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted ids -> contiguous (low, high) ranges."""
    runs: list[tuple[int, int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        elif not runs or i > runs[-1][1]:
            runs.append((i, i))
    return runs
