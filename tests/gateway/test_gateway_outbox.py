"""The SQLite outbox and its writer thread: atomic batches, eviction, a full disk, restarts."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from allmende.gateway.metrics import Metrics
from allmende.gateway.outbox import Batch, Outbox, OutboxError, _runs
from allmende.gateway.store import Store


def sample(metrics, name, **labels):
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_runs():
    assert _runs([1, 2, 3, 7, 8, 10]) == [(1, 3), (7, 8), (10, 10)]
    assert _runs([]) == []


def test_batch_commits_atomically_and_survives_reopen(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_readings=1000)
    box.open()
    batch = Batch()
    for i in range(250):  # more than one multi-row statement
        batch.add(1000.0 + i, 3, f'["r{i}"]')
    batch.sessions.append(("aa", "s1", 1, None, b"k" * 16, b"a" * 16, 250, 0, 1, 0, 0, 1.0, 1, 0))
    batch.nonces.append(("bb", 7))
    result = box.write(batch)
    assert (result.committed_readings, box.depth_readings, box.depth_records) == (750, 750, 250)
    records = box.fetch(0, 1000)
    assert [r.body for r in records[:2]] == ['["r0"]', '["r1"]'] and len(records) == 250
    box.write(Batch(acked=[r.id for r in records[:100]]))
    box.close()
    again = Outbox(tmp_path / "o.sqlite", max_readings=1000)
    again.open()
    assert (again.depth_readings, again.depth_records, again.oldest_received) == (450, 150, 1100.0)
    sessions, nonces = again.load_state()
    assert sessions[0][6] == 250 and nonces == {bytes.fromhex("bb"): {7}}
    # ids are never reused, even after the table empties (the forwarder's cursor relies on it)
    again.write(Batch(acked=[r.id for r in again.fetch(0, 1000)]))
    b = Batch()
    b.add(1.0, 1, "[]")
    again.write(b)
    assert again.fetch(0, 10)[0].id == 251
    again.close()


def test_checkpoints_happen_beside_the_writer_not_inside_its_commits(tmp_path):
    path = tmp_path / "o.sqlite"
    writer, reader = Outbox(path, max_readings=10**6), Outbox(path, max_readings=10**6)
    writer.open()
    reader.open()
    body = '["' + "x" * 400 + '"]'
    for _ in range(50):  # ~1,300 pages of WAL: past SQLite's default autocheckpoint (1,000)
        batch = Batch()
        for i in range(200):
            batch.add(float(i), 1, body)
        writer.write(batch)
    wal = path.with_name(path.name + "-wal")
    before = path.stat().st_size
    assert wal.stat().st_size > 1000 * 4096 and before < 100 * 4096  # all still in the WAL
    reader.checkpoint()
    assert path.stat().st_size > 1000 * 4096  # now copied into the database
    assert reader.fetch(0, 20000)[-1].id == 10000
    writer.close()
    reader.close()


def test_eviction_drops_the_oldest_and_counts(tmp_path, caplog):
    async def main():
        metrics = Metrics()
        store = Store(
            Outbox(tmp_path / "o.sqlite", max_readings=100),
            metrics,
            commit_interval_s=0.005,
            max_pending_readings=10_000,
        )
        await store.open()
        for i in range(60):
            store.add(float(i), 5, f'["{i}"]')
        await store.close()
        return metrics, store

    with caplog.at_level(logging.WARNING):
        metrics, store = asyncio.run(main())
    assert store.outbox.depth_readings <= 100
    box = Outbox(tmp_path / "o.sqlite", max_readings=100)
    box.open()
    bodies = [r.body for r in box.fetch(0, 100)]
    assert bodies[-1] == '["59"]' and bodies[0] == '["40"]'  # the newest 20 records remain
    assert sample(metrics, "allmende_gateway_outbox_evicted_readings_total") == 200
    assert any(r.getMessage() == "outbox_evicted" for r in caplog.records)


def test_full_disk_is_reported_and_nothing_is_lost(tmp_path, caplog):
    path = tmp_path / "o.sqlite"

    async def main():
        metrics = Metrics()
        box = Outbox(path, max_readings=1_000_000, max_db_pages=12)
        store = Store(box, metrics, commit_interval_s=0.005, max_pending_readings=1_000_000)
        await store.open()
        for i in range(300):
            store.add(float(i), 1, '["' + "x" * 200 + f'{i}"]')
        for _ in range(200):
            await asyncio.sleep(0.01)
            if sample(metrics, "allmende_gateway_outbox_write_errors_total", reason="disk_full"):
                break
        assert (
            sample(metrics, "allmende_gateway_outbox_write_errors_total", reason="disk_full") >= 1
        )
        assert store.uncommitted_readings == 300  # kept in memory, not accepted, not dropped
        box.db.execute("PRAGMA max_page_count=100000")  # the operator frees space
        for _ in range(300):
            await asyncio.sleep(0.01)
            if store.committed_total == 300:
                break
        await store.close()
        return store

    with caplog.at_level(logging.WARNING):
        store = asyncio.run(main())
    assert store.committed_total == 300
    messages = [r.getMessage() for r in caplog.records]
    assert "outbox_write_failed" in messages and "outbox_write_recovered" in messages
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 300
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_outbox_error_reasons(tmp_path):
    bad = tmp_path / "not-a-db.sqlite"
    bad.write_bytes(b"garbage" * 1000)
    box = Outbox(bad, max_readings=10)
    try:
        box.open()
    except OutboxError as exc:
        assert exc.reason in ("corrupt", "io_error")
    else:  # pragma: no cover
        raise AssertionError("a garbage file opened as an outbox")
