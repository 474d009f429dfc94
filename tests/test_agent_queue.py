"""quarry-agent delivery: the disk queue keeps events while the server is down and across an
agent restart, and delivers each exactly once when the server comes back; a full queue drops
with a log line and a counter in the heartbeat; 503 + Retry-After is honoured."""

from __future__ import annotations

import gzip
import json
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from quarry_agent.queue import DiskQueue
from quarry_agent.sender import Sender, retry_after

from server.app import create_app
from tests.notify_helpers import LiveServer, settings_for
from tests.support.agent import agent_log, agent_process, hunt, kernel_sources_missing, wait_for
from tests.support.live import free_port

pytestmark = pytest.mark.slow


def queued_text(state: Path) -> str:
    return "".join(gzip.decompress(p.read_bytes()).decode() for p in sorted((state / "queue").glob("*.ndjson.gz")))


def test_events_survive_server_down_and_agent_restart_and_arrive_once(tmp_path: Path) -> None:
    reason = kernel_sources_missing()
    if reason:
        pytest.skip(reason)
    port = free_port()  # nothing listens here until the server starts
    url = f"http://127.0.0.1:{port}"
    state = tmp_path / "state"
    marker = f"quarry-queue-{uuid.uuid4().hex[:12]}"
    extra = ["--sources", "process", "--max-backoff-s", "0.3"]
    app = create_app(settings_for(tmp_path / "data"))
    with LiveServer(app, port=port) as srv_probe:  # only to mint a key in this data dir
        key = srv_probe.key("ingest", "queue test")
    with agent_process(url, key, state, extra):
        # Processes that live 100 ms: a process gone before the agent reads /proc is reported
        # without its command line (benchmarks/agent.py measures how often that happens).
        def run(tag: str) -> None:
            subprocess.run(["/bin/sh", "-c", "sleep 0.1; true", tag], check=True)

        def warm() -> bool:
            run(f"warmup-{marker}")
            return f"warmup-{marker}" in queued_text(state)
        wait_for(warm, 20, "the agent to capture execs")
        procs = [subprocess.Popen(["/bin/sh", "-c", "sleep 0.1; true", f"{marker}-{i}"]) for i in range(20)]
        assert [p.wait(30) for p in procs] == [0] * 20
        needles = [f"{marker}-{i}" + '"' for i in range(20)]  # the JSON string ends after it
        wait_for(lambda: all(n in queued_text(state) for n in needles), 10, "the 20 events in the disk queue")
    assert "wait in the queue" in agent_log(state)
    # Restarted, still without a server: the events stay; then the server comes up.
    with agent_process(url, key, state, extra):
        time.sleep(0.5)
        assert marker in queued_text(state)
        with LiveServer(app, port=port) as srv, srv.client() as admin:
            rows = wait_for(
                lambda: (r := hunt(admin, f'DeviceProcessEvents | where ProcessCommandLine contains "{marker}-"')) and len(r) >= 20 and r,
                20, "the queued events at the server",
            )
            wait_for(lambda: not list((state / "queue").glob("*.ndjson.gz")) or None, 10, "an empty queue")
            rows = hunt(admin, f'DeviceProcessEvents | where ProcessCommandLine contains "{marker}-"')
    lines = sorted(r["ProcessCommandLine"] for r in rows)
    assert lines == sorted(f"/bin/sh -c 'sleep 0.1; true' {marker}-{i}" for i in range(20))  # each once
    assert len({r["ReportId"] for r in rows}) == 20


def test_full_queue_drops_with_a_log_line_and_a_counter_in_the_heartbeat(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    q = DiskQueue(tmp_path, max_bytes=600, batch_events=10)
    for i in range(30):  # random text compresses badly: one batch of 10 fits in 600 bytes, not two
        q.put("DeviceProcessEvents", {"ProcessCommandLine": uuid.uuid4().hex * 4, "i": i})
    q.flush()
    assert q.dropped == 20 and [s.count for s in q.pending()] == [10]
    assert json.loads((tmp_path / "counters.json").read_text())["dropped"] == 20
    assert "queue full" in caplog.text and "dropped 10 DeviceProcessEvents events; 20 dropped in all" in caplog.text
    # The counter survives a restart and reaches the server in the heartbeat. The kept batch
    # has no Timestamp or DeviceId: the server refuses it (400), and that is counted too.
    app = create_app(settings_for(tmp_path / "data"))
    with LiveServer(app) as srv, srv.client() as admin:
        with agent_process(srv.url, srv.key("ingest"), tmp_path, ["--sources", "heartbeat", "--heartbeat-s", "0.5"]):
            wait_for(lambda: list((tmp_path / "rejected").glob("*.ndjson.gz")), 15, "the refused batch set aside")
            def counted() -> list[dict[str, Any]]:
                rows = hunt(admin, "DeviceInfo")
                return [r for r in rows if json.loads(r["AdditionalFields"])["AgentRejectedEvents"] == 10]
            info = wait_for(counted, 15, "a heartbeat counting the refused batch")[0]
        counters = json.loads(info["AdditionalFields"])
        assert (counters["AgentDroppedEvents"], counters["AgentRejectedEvents"]) == (20, 10)
    assert "server refused 10 DeviceProcessEvents events" in agent_log(tmp_path)


class _Busy(BaseHTTPRequestHandler):
    """Answers POSTs with ``status`` and Retry-After: 1 first, then 200 (the ingest contract:
    503 back-pressure, 507 full disk)."""

    hits: list[float] = []
    status = 503

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        _Busy.hits.append(time.monotonic())
        if len(_Busy.hits) == 1:
            self.send_response(_Busy.status)
            self.send_header("Retry-After", "1")
            body = b'{"ok": false, "error": "back-pressure"}'
        else:
            self.send_response(200)
            body = b'{"accepted": 1, "expired": 0}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("status", [503, 507])
def test_sender_waits_for_retry_after(tmp_path: Path, status: int) -> None:
    _Busy.hits, _Busy.status = [], status
    assert retry_after("2", 0.5) == 2.0 and retry_after(None, 0.5) == 0.5
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 0.5) == 0.0  # a date in the past
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        q = DiskQueue(tmp_path)
        q.put("DeviceEvents", {"ActionType": "x"})
        q.flush()
        stop = threading.Event()
        with httpx.Client(base_url=f"http://127.0.0.1:{httpd.server_address[1]}") as client:
            sender = Sender(client, q, stop, min_backoff_s=0.01)
            seg = q.pending()[0]
            assert sender.send_one(seg) is False  # 503: waited Retry-After
            assert sender.send_one(seg) is True
        assert _Busy.hits[1] - _Busy.hits[0] >= 0.95
        assert not q.pending() and sender.sent_events == 1
    finally:
        httpd.shutdown()
        httpd.server_close()
