"""Ingest throughput over HTTP against an in-process Parquet baseline, in one run.

    .venv/bin/python benchmarks/ingest.py [--events 200000] [--clients 4] [--batch 1000]

Starts ``quarry serve`` as a subprocess with default settings (own temporary data directory,
free loopback port), sends gzip'd NDJSON batches of DeviceProcessEvents from several concurrent
clients, and reports events/s from the first request to the last acknowledgement (every
acknowledgement means fsync'd in the WAL). In the same run it times the baseline: the same rows
turned into a zstd Parquet file with pyarrow in this process. It prints both, their ratio and
the server's peak RSS (VmHWM). Bodies are compressed before the clock starts, so the figure is
the server's, not the client's gzip.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schema import default_catalog  # noqa: E402
from server.ingest.convert import ingest_schema  # noqa: E402

KEY = "bench-admin-key"
TABLE = "DeviceProcessEvents"

_PARENTS = [("explorer.exe", "C:\\Windows\\explorer.exe"), ("services.exe", "C:\\Windows\\System32\\services.exe"),
            ("cmd.exe", "C:\\Windows\\System32\\cmd.exe"), ("powershell.exe",
            "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe")]
_CHILDREN = [("cmd.exe", "cmd.exe /c whoami /all"), ("powershell.exe", "powershell.exe -NoProfile -c Get-Process"),
             ("svchost.exe", "svchost.exe -k netsvcs -p"), ("chrome.exe", "chrome.exe --type=renderer --lang=en-US"),
             ("conhost.exe", "conhost.exe 0xffffffff -ForceV1"), ("git.exe", "git.exe fetch --all")]


def make_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """DeviceProcessEvents rows shaped like agent output: ~30 populated columns, the rest absent."""
    rnd = random.Random(seed)
    now = datetime.now(UTC)
    devices = [(f"{rnd.getrandbits(160):040x}", f"ws-{i:03d}.contoso.local") for i in range(50)]
    rows = []
    for i in range(n):
        dev_id, dev_name = devices[i % len(devices)]
        parent, parent_path = rnd.choice(_PARENTS)
        child, cmdline = rnd.choice(_CHILDREN)
        ts = now - timedelta(seconds=rnd.randint(0, 6 * 86400), microseconds=rnd.randint(0, 999999))
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{rnd.randint(0, 9)}Z"
        rows.append({
            "Timestamp": stamp,
            "DeviceId": dev_id,
            "DeviceName": dev_name,
            "ActionType": "ProcessCreated",
            "FileName": child,
            "FolderPath": f"C:\\Windows\\System32\\{child}",
            "SHA1": f"{rnd.getrandbits(160):040x}",
            "SHA256": f"{rnd.getrandbits(256):064x}",
            "MD5": f"{rnd.getrandbits(128):032x}",
            "FileSize": rnd.randint(10_000, 5_000_000),
            "ProcessVersionInfoCompanyName": "Microsoft Corporation",
            "ProcessVersionInfoProductName": "Microsoft Windows Operating System",
            "ProcessId": rnd.randint(100, 65000),
            "ProcessCommandLine": cmdline,
            "ProcessIntegrityLevel": rnd.choice(["Medium", "High", "System"]),
            "ProcessTokenElevation": "TokenElevationTypeDefault",
            "ProcessCreationTime": stamp,
            "AccountDomain": "contoso",
            "AccountName": f"user{i % 40}",
            "AccountSid": f"S-1-5-21-1004336348-1177238915-682003330-{1000 + i % 40}",
            "LogonId": rnd.randint(1000, 10**6),
            "InitiatingProcessAccountName": f"user{i % 40}",
            "InitiatingProcessFileName": parent,
            "InitiatingProcessFolderPath": parent_path,
            "InitiatingProcessId": rnd.randint(100, 65000),
            "InitiatingProcessCommandLine": parent,
            "InitiatingProcessCreationTime": stamp,
            "InitiatingProcessParentFileName": "userinit.exe",
            "InitiatingProcessParentId": rnd.randint(100, 65000),
            "InitiatingProcessSHA1": f"{rnd.getrandbits(160):040x}",
            "AppGuardContainerId": "",
            "ReportId": i,
        })
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def baseline(rows: list[dict[str, Any]], out: Path) -> float:
    """Seconds to turn the rows into a zstd Parquet file in-process with pyarrow."""
    table = default_catalog().table(TABLE)
    assert table is not None
    schema = ingest_schema(table)
    read = pa.schema([pa.field(f.name, pa.string() if pa.types.is_timestamp(f.type) else f.type)
                      for f in schema])
    t0 = time.perf_counter()
    t = pa.Table.from_pylist(rows, schema=read)
    # Same datetime treatment as ingest: parse the ISO strings.
    for i, f in enumerate(schema):
        if pa.types.is_timestamp(f.type):
            col = pa.compute.cast(
                pa.compute.replace_substring_regex(t.column(i), r"(\.\d{6})\d+", r"\1"),
                pa.timestamp("us", "UTC")).cast(f.type)
            t = t.set_column(i, f.name, col)
    pq.write_table(t, out, compression="zstd")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()

    rows = make_rows(args.events)
    bodies = [gzip.compress(b"\n".join(orjson.dumps(r) for r in rows[i : i + args.batch]), 6)
              for i in range(0, len(rows), args.batch)]
    raw_bytes = sum(len(b"\n".join(orjson.dumps(r) for r in rows[:1000])) for _ in range(1))
    print(f"{len(rows)} events in {len(bodies)} gzip NDJSON batches of {args.batch}; "
          f"~{raw_bytes / 1000:.0f} B/event uncompressed, "
          f"{sum(map(len, bodies)) / len(rows):.0f} B/event gzip'd; {args.clients} clients")

    with tempfile.TemporaryDirectory(prefix="quarry-bench-") as tmp:
        tmpdir = Path(tmp)
        base_s = baseline(rows, tmpdir / "baseline.parquet")

        port = free_port()
        exe = Path(sys.executable).with_name("quarry")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "server.cli"]
        env = {**os.environ, "QUARRY_ADMIN_KEY": KEY}
        log = (tmpdir / "server.log").open("wb")
        proc = subprocess.Popen([*cmd, "serve", "--data-dir", str(tmpdir / "data"), "--host",
                                 "127.0.0.1", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("server did not start; see its log")
                time.sleep(0.1)

            queue = list(range(len(bodies)))
            lock = threading.Lock()
            accepted = [0]
            retries = [0]
            errors: list[str] = []

            def client() -> None:
                headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/x-ndjson",
                           "Content-Encoding": "gzip"}
                with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
                    while True:
                        with lock:
                            if not queue:
                                return
                            i = queue.pop()
                        while True:
                            r = c.post(f"/api/ingest/{TABLE}", content=bodies[i])
                            if r.status_code == 503:
                                with lock:
                                    retries[0] += 1
                                time.sleep(float(r.headers.get("Retry-After", "1")))
                                continue
                            if r.status_code != 200:
                                errors.append(r.text[:300])
                                return
                            with lock:
                                accepted[0] += r.json()["accepted"]
                            break

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            http_s = time.perf_counter() - t0
            rss = peak_rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        if errors:
            print("errors:", errors[:3])
            return 1

    http_eps = accepted[0] / http_s
    base_eps = len(rows) / base_s
    print(f"HTTP ingest : {http_eps:12,.0f} events/s  ({accepted[0]} acknowledged in {http_s:.2f} s, "
          f"{retries[0]} back-pressure retries)")
    print(f"baseline    : {base_eps:12,.0f} events/s  (rows -> Parquet in-process, {base_s:.2f} s)")
    print(f"ratio       : {http_eps / base_eps:.2f} (HTTP / baseline)")
    print(f"server peak RSS: {rss:.0f} MiB")
    print(f"target 50,000 events/s: {'met' if http_eps >= 50_000 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
