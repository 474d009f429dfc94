"""What a hostile ingest body costs the server, against an honest body of the same size.

    .venv/bin/python benchmarks/hostile_ingest.py [--runs 3]

Starts ``quarry serve`` (default settings, own data directory) and posts, one at a time: an
honest ~6 MB NDJSON batch of DeviceProcessEvents (the baseline, accepted), then bodies of the
same size that used to be expensive or fatal: two million ``{}`` as a JSON array, as NDJSON and
as a streaming export, and a 6 MB column name. For each it prints the status, the size of the answer, the server's CPU
(user + system from /proc) and wall time, and the ratio of that CPU to the baseline's: a hostile
body should cost no more than an honest one of its size (before the row limit, two million
``{}`` cost ~12 s, about 30x an honest 6 MB batch, while holding an ingest slot).
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.ingest import KEY, TABLE, cpu_seconds, make_rows, start_server  # noqa: E402


def bodies() -> dict[str, tuple[str, bytes, dict[str, str]]]:
    nd = {"Content-Type": "application/x-ndjson"}
    rows = make_rows(4_500)
    honest = b"\n".join(orjson.dumps(r) for r in rows) + b"\n"
    empty = b"{}," * 1_999_999 + b"{}"
    return {
        "honest NDJSON (baseline)": (f"/api/ingest/{TABLE}", honest, nd),
        "honest JSON array": (f"/api/ingest/{TABLE}", orjson.dumps(rows), {}),
        "2M {} JSON array": (f"/api/ingest/{TABLE}", b"[" + empty + b"]", {}),
        "2M {} NDJSON": (f"/api/ingest/{TABLE}", b"{}\n" * 2_000_000, nd),
        "2M {} streaming": ("/api/ingest/streaming", b'{"records":[' + empty + b"]}", {}),
        "6 MB column name": (f"/api/ingest/{TABLE}", b'[{"' + b"A" * (6 << 20) + b'":1}]', {}),
    }


def post(port: int, route: str, body: bytes, headers: dict[str, str]) -> tuple[int, int]:
    """(status, size of the answer in bytes)"""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", route, body=body,
                 headers={"Authorization": f"Bearer {KEY}", **headers})
    resp = conn.getresponse()
    size = len(resp.read())
    conn.close()
    return resp.status, size


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cases = bodies()
    cpu: dict[str, list[float]] = {n: [] for n in cases}
    wall: dict[str, list[float]] = {n: [] for n in cases}
    status: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, log = start_server(Path(tmp))
        try:
            for _ in range(args.runs):
                for name, (route, body, headers) in cases.items():
                    c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                    status[name] = post(port, route, body, headers)
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(cpu_seconds(proc.pid) - c0)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            log.close()
    base = statistics.median(cpu["honest NDJSON (baseline)"])
    print(f"{'body':28} {'MB':>5} {'status':>6} {'answer B':>9} {'server CPU s':>12} {'wall s':>7} "
          f"{'CPU / baseline':>15}")
    for name, (_, body, _) in cases.items():
        c = statistics.median(cpu[name])
        print(f"{name:28} {len(body) / 1e6:5.1f} {status[name][0]:6d} {status[name][1]:9d} {c:12.3f} "
              f"{statistics.median(wall[name]):7.3f} {c / base:15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
