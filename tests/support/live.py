"""The real app under uvicorn, in a thread of the test process, on 127.0.0.1 with a port chosen at
run time. One class for every end-to-end test module (and the benchmarks that reuse them); each
adds its own conveniences (keys, clients, direct storage reads) by subclassing."""

from __future__ import annotations

import socket
import threading
import time
from typing import Self

import uvicorn
from fastapi import FastAPI


def free_port() -> int:
    """A loopback port nothing listens on at the moment (for a subprocess server, or as a port
    that refuses connections)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """Start with ``with LiveServer(app) as srv:`` (or ``start()``/``stop()``). The app runs in
    this process, so tests may also look at ``app.state`` directly."""

    def __init__(
        self,
        app: FastAPI,
        *,
        timeout_graceful_shutdown: int | None = None,
        join_timeout_s: float = 30.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.app = app
        # Bind before starting so the port is known (and held) before uvicorn runs.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=timeout_graceful_shutdown
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.join_timeout_s = join_timeout_s

    def start(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.join_timeout_s)
        self.sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
