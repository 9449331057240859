"""Gateway benchmark: ingest (GWMP -> checks -> decode -> outbox), backlog drain to Mosquitto,
peak RSS and the receive-to-commit window, on this machine. Prints a table.

    .venv/bin/python bench/gateway_bench.py                 # ~2 minutes
    .venv/bin/python bench/gateway_bench.py --rates 2000,4000 --step-seconds 3

The gateway runs as `allmende gateway run` in its own process, with the shipped defaults
(SQLite synchronous=FULL, 20 ms commit interval); load comes from a separate process acting
as a packet forwarder (one frame per PUSH_DATA, ABP devices, full MIC/FCnt/decrypt/decode).
The outbox is filled while Mosquitto is down, then Mosquitto starts and the backlog drains
to a subscriber while live traffic continues. Nothing here asserts: figures are reported.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from allmende.firmware.app import payload  # noqa: E402
from allmende.gateway import gwmp, lorawan  # noqa: E402

FWD_EUI = bytes.fromhex("b0b0b0b0b0b0b0b0")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def device_keys(i: int) -> tuple[bytes, int, bytes, bytes]:
    return (
        bytes.fromhex(f"70b3d5bbbb{i:06x}"),
        0x26100000 | i,
        bytes([1, i & 0xFF, i >> 8]) + bytes(13),
        bytes([2, i & 0xFF, i >> 8]) + bytes(13),
    )


def build_datagrams(devices: int, first_round: int, rounds: int, per_datagram: int) -> list[bytes]:
    """PUSH_DATA datagrams of `per_datagram` frames each; every device sends `rounds` frames
    from `first_round` on."""
    out = []
    batch: list[dict] = []
    tmst = 0
    for r in range(first_round, first_round + rounds):
        for i in range(devices):
            _, addr, nwk, app = device_keys(i)
            reading = {
                "pm25": (r % 500) / 10,
                "pm10": (i % 900) / 10,
                "temperature": 21.5,
                "humidity": 40.0,
                "pressure": 1000.0 + r % 50,
                "battery": 3.6,
                "co2": 400 + r % 600,
                "flags": 0,
            }
            phy = lorawan.build_data_frame(
                mtype=lorawan.UNCONFIRMED_DATA_UP,
                dev_addr=addr,
                fcnt=r + 1,
                nwk_s_key=nwk,
                app_s_key=app,
                fport=1,
                payload=payload.encode(1, reading),
                fctrl_flags=lorawan.FCTRL_ADR,
            )
            tmst = (tmst + 1000) & 0xFFFFFFFF
            batch.append(
                gwmp.build_rxpk(
                    phy, freq_hz=868_100_000, sf=7, bw_khz=125, tmst=tmst, rssi=-70.0, snr=8.0
                )
            )
            if len(batch) == per_datagram:
                out.append(gwmp.push_data(len(out) & 0xFFFF, FWD_EUI, {"rxpk": batch}))
                batch = []
    if batch:
        out.append(gwmp.push_data(len(out) & 0xFFFF, FWD_EUI, {"rxpk": batch}))
    return out


def sender(
    port: int,
    devices: int,
    first_round: int,
    rounds: int,
    rate: float,
    per_datagram: int,
    results: mp.Queue,
) -> None:
    """A packet forwarder: sends at `rate` frames/s (0: as fast as it can), counts PUSH_ACKs."""
    datagrams = build_datagrams(devices, first_round, rounds, per_datagram)
    rate = rate / per_datagram
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect(("127.0.0.1", port))
    acks = [0]
    ack_times: list[float] = []  # first and last PUSH_ACK
    done = threading.Event()

    def receive() -> None:
        sock.settimeout(0.2)
        quiet = None
        while True:
            try:
                sock.recv(64)
                acks[0] += 1
                now = time.perf_counter()
                if not ack_times:
                    ack_times.append(now)
                ack_times[1:] = [now]
                quiet = None
            except TimeoutError:
                if done.is_set():
                    quiet = quiet or time.monotonic()
                    if time.monotonic() - quiet > 1.0:
                        return
            except ConnectionRefusedError:
                continue

    thread = threading.Thread(target=receive)
    thread.start()
    results.put(("ready", len(datagrams)))
    start = time.perf_counter()
    for i, d in enumerate(datagrams):
        try:
            sock.send(d)
        except (BlockingIOError, ConnectionRefusedError):
            pass
        if rate and i % 32 == 0:
            ahead = start + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    elapsed = time.perf_counter() - start
    done.set()
    thread.join()
    span = ack_times[-1] - ack_times[0] if len(ack_times) == 2 else float("nan")
    frames = devices * rounds
    results.put(("done", frames, elapsed, acks[0] * frames / len(datagrams), span))


class Gateway:
    def __init__(self, directory: Path, devices: int, mqtt_port: int) -> None:
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.metrics_port = free_port()
        entries = []
        for i in range(devices):
            eui, addr, nwk, app = device_keys(i)
            entries.append(
                {
                    "dev_eui": eui.hex(),
                    "dev_addr": f"{addr:08x}",
                    "nwk_s_key": nwk.hex(),
                    "app_s_key": app.hex(),
                    "kind": "air_quality",
                    "fw": "0.1.0",
                }
            )
        (directory / "devices.json").write_text(json.dumps({"devices": entries}))
        self.config = directory / "gateway.toml"
        self.config.write_text(
            f'[gateway]\nid = "bench"\ndata_dir = "{directory / "data"}"\n'
            f'devices = "{directory / "devices.json"}"\n'
            f'[udp]\nlisten = "127.0.0.1:{self.udp_port}"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
            "reconnect_min_s = 0.1\nreconnect_max_s = 0.2\n"
            f"[outbox]\nmax_readings = 5000000\n"
            f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n[log]\nlevel = "warning"\n'
        )
        self.log = open(directory / "gateway.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "allmende.cli", "gateway", "run", "--config", str(self.config)],
            stdout=self.log,
            stderr=self.log,
            cwd=REPO,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.metrics()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((directory / "gateway.log").read_text()[-2000:]) from None
                time.sleep(0.1)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10
        ) as resp:
            text = resp.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, snapshot=None, **labels: str) -> float:
        snapshot = snapshot if snapshot is not None else self.metrics()
        return snapshot.get((name, tuple(sorted(labels.items()))), 0.0)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def commit_window(before, after, name="allmende_gateway_receive_to_commit_seconds_bucket"):
    """(p99, max) upper bucket bounds of a histogram between two metric snapshots
    (default: receive-to-commit)."""
    buckets = sorted(
        (float(dict(labels)["le"]), value - before.get((n, labels), 0.0))
        for (n, labels), value in after.items()
        if n == name
    )
    total = buckets[-1][1] if buckets else 0
    if not total:
        return float("nan"), float("nan")
    p99 = next(le for le, count in buckets if count >= 0.99 * total)
    top = next(le for le, count in buckets if count >= total)
    return p99, top


def fsync_latency_ms(directory: Path, samples: int = 200) -> tuple[float, float, float]:
    """(p50, p99, max) of write + fsync on the outbox's disk: what each commit waits for."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    times = []
    try:
        for _ in range(samples):
            os.write(fd, bytes(32768))
            start = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - start) * 1000)
            time.sleep(0.01)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)], times[-1]


def run_sender(
    gw: Gateway, devices: int, first_round: int, rounds: int, rate: float, per_datagram: int = 1
):
    results: mp.Queue = mp.Queue()
    proc = mp.Process(
        target=sender, args=(gw.udp_port, devices, first_round, rounds, rate, per_datagram, results)
    )
    proc.start()
    assert results.get(timeout=300)[0] == "ready"
    return proc, results


def start_mosquitto(directory: Path, port: int) -> subprocess.Popen:
    conf = directory / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"
    )
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def subscribe_counter(port: int) -> tuple[list[int], object]:
    import paho.mqtt.client as mqtt

    count = [0]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-subscriber")

    def on_message(_c, _u, msg) -> None:
        count[0] += msg.payload.count(b'"key":')

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe("allmende/gw/+/up", qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return count, client


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument(
        "--rates", default="2000,5000,8000,10000,12000", help="paced uplinks/s to try"
    )
    parser.add_argument("--step-seconds", type=float, default=4.0)
    parser.add_argument("--saturate-frames", type=int, default=60000, help="frames sent unpaced")
    parser.add_argument("--live-rate", type=float, default=500.0, help="uplinks/s during the drain")
    parser.add_argument(
        "--rxpk-per-datagram",
        type=int,
        default=1,
        help="frames per PUSH_DATA (1: worst case; a busy SX1301 forwarder sends up to 8)",
    )
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="allmende-gw-bench-"))
    mqtt_port = free_port()
    gw = Gateway(directory, args.devices, mqtt_port)
    rows: list[tuple[str, str, str]] = []
    round_ = 0
    readings_per_uplink = 7  # this bench's payload: 6 fields + CO2
    try:
        print(
            f"# machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
            f"devices {args.devices}; {args.rxpk_per_datagram} rxpk per PUSH_DATA; "
            f"workdir {directory}",
            flush=True,
        )
        fsync = fsync_latency_ms(directory)
        print(
            f"# the disk: fsync p50 {fsync[0]:.1f} ms, p99 {fsync[1]:.1f} ms, "
            f"max {fsync[2]:.1f} ms (every commit waits for one; synchronous=FULL)",
            flush=True,
        )
        sustained = 0.0
        lossless_max = 0.0
        first_before = last_lossless_after = None
        still_lossless = True  # "sustained" = every step up to it lost nothing
        for rate in [int(r) for r in args.rates.split(",")]:
            rounds = max(1, int(rate * args.step_seconds / args.devices))
            before = gw.metrics()
            first_before = first_before or before
            proc, results = run_sender(
                gw, args.devices, round_, rounds, rate, args.rxpk_per_datagram
            )
            round_ += rounds
            _, sent, elapsed, acked, _span = results.get(timeout=600)
            proc.join()
            time.sleep(1.0)  # let the last batches commit
            after = gw.metrics()
            up = gw.value(
                "allmende_gateway_uplinks_total", after, type="data", path="gwmp"
            ) - gw.value("allmende_gateway_uplinks_total", before, type="data", path="gwmp")
            committed = gw.value("allmende_gateway_readings_committed_total", after) - gw.value(
                "allmende_gateway_readings_committed_total", before
            )
            p99, top = commit_window(before, after)
            _, tx_top = commit_window(
                before, after, "allmende_gateway_outbox_transaction_seconds_bucket"
            )
            lossless = up >= sent * 0.999 and committed >= up * readings_per_uplink * 0.999
            still_lossless = still_lossless and lossless
            if still_lossless:
                sustained = max(sustained, sent / elapsed)
                lossless_max = max(lossless_max, top)
                last_lossless_after = after
            rows.append(
                (
                    f"paced {rate}/s x {elapsed:.1f} s",
                    f"offered {sent / elapsed:,.0f}/s, accepted {up:,.0f}/{sent:,} "
                    f"({100 * up / sent:.2f} %)",
                    f"commit p99 <= {p99 * 1000:.0f} ms, max <= {top * 1000:.0f} ms "
                    f"(longest transaction <= {tx_top * 1000:.0f} ms)",
                )
            )
            print(" | ".join(rows[-1]), flush=True)

        frames_per_device = max(1, args.saturate_frames // args.devices)
        before = gw.metrics()
        t_before = time.perf_counter()
        proc, results = run_sender(
            gw, args.devices, round_, frames_per_device, 0, args.rxpk_per_datagram
        )
        round_ += frames_per_device
        _, sent, elapsed, acked, span = results.get(timeout=600)
        proc.join()
        time.sleep(1.0)
        after = gw.metrics()
        up = gw.value("allmende_gateway_uplinks_total", after, type="data", path="gwmp") - gw.value(
            "allmende_gateway_uplinks_total", before, type="data", path="gwmp"
        )
        _ = t_before
        p99, top = commit_window(before, after)
        saturated = acked / span
        rows.append(
            (
                "saturated (unpaced burst)",
                f"sent {sent:,} in {elapsed:.2f} s; the gateway took {acked:,.0f} "
                f"at {saturated:,.0f} uplinks/s (first to last PUSH_ACK), "
                f"{sent - acked:,.0f} overflowed its socket buffer",
                f"commit p99 <= {p99 * 1000:.0f} ms, max <= {top * 1000:.0f} ms",
            )
        )
        print(" | ".join(rows[-1]), flush=True)

        # Live traffic first (its frames are built before it reports ready), then the broker.
        live_rounds = max(1, int(args.live_rate * 120 / args.devices))
        proc, results = run_sender(gw, args.devices, round_, live_rounds, args.live_rate)
        time.sleep(0.5)
        before = gw.metrics()
        backlog = gw.value("allmende_gateway_outbox_depth_readings", before)
        forwarded0 = gw.value("allmende_gateway_readings_forwarded_total", before)
        t0 = time.perf_counter()
        broker = start_mosquitto(directory, mqtt_port)
        count, client = subscribe_counter(mqtt_port)
        # FIFO: the backlog is out once as many readings as it held have been acknowledged.
        while True:
            time.sleep(0.05)
            snap = gw.metrics()
            forwarded = gw.value("allmende_gateway_readings_forwarded_total", snap) - forwarded0
            if forwarded >= backlog or time.perf_counter() - t0 > 600:
                break
        t_drained = time.perf_counter()
        drain_rate = backlog / (t_drained - t0)
        os.kill(proc.pid, signal.SIGTERM)
        proc.join()
        after = gw.metrics()
        live_up = gw.value(
            "allmende_gateway_uplinks_total", after, type="data", path="gwmp"
        ) - gw.value("allmende_gateway_uplinks_total", before, type="data", path="gwmp")
        live_elapsed = t_drained - t0
        p99, top = commit_window(before, after)
        time.sleep(2.0)
        rows.append(
            (
                "backlog drain to Mosquitto",
                f"{backlog:,.0f} readings in {t_drained - t0:.1f} s from broker start = "
                f"{drain_rate:,.0f} readings/s (subscriber got {count[0]:,} incl. live)",
                f"meanwhile live {live_up / live_elapsed:,.0f} uplinks/s accepted, commit max <= "
                f"{top * 1000:.0f} ms",
            )
        )
        print(" | ".join(rows[-1]), flush=True)
        rss = gw.peak_rss_mb()
        overall_max = gw.value("allmende_gateway_receive_to_commit_max_seconds")
        client.loop_stop()
        gw.stop()
        broker.terminate()
        broker.wait(10)
    except BaseException:
        gw.stop()
        raise

    print()
    print("| figure | measured | target |")
    print("| --- | --- | --- |")
    print(
        "| sustained ingest (highest paced rate with no loss at it or below) | "
        f"{sustained:,.0f} uplinks/s "
        f"({sustained * readings_per_uplink:,.0f} readings/s) | >= 10,000 uplinks/s |"
    )
    for name, a, b in rows:
        print(f"| {name} | {a}; {b} | |")
    print(f"| backlog drain | {drain_rate:,.0f} readings/s | >= 50,000 readings/s |")
    print(f"| peak RSS of the gateway | {rss:.0f} MB | <= 100 MB |")
    lossless_ms, overall_ms = lossless_max * 1000, overall_max * 1000
    shown = f"<= {lossless_ms:.0f} ms (bucket bound)" if sustained else "n/a (no lossless rate)"
    if first_before is not None and last_lossless_after is not None:
        p99_all, _ = commit_window(first_before, last_lossless_after)
        print(f"| receive-to-commit, p99 at lossless rates | <= {p99_all * 1000:.0f} ms "
              "(bucket bound) | |")
    print(f"| receive-to-commit, max at lossless rates | {shown} | <= 100 ms |")
    print(f"| fsync of the outbox's disk (p50 / p99 / max) | {fsync[0]:.1f} / {fsync[1]:.1f} / "
          f"{fsync[2]:.1f} ms | |")
    print(f"| receive-to-commit, max over the run, overload included | {overall_ms:.0f} ms | |")
    shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
