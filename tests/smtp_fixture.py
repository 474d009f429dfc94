"""A real SMTP server (aiosmtpd) on loopback, as a reusable pytest fixture.

Use it from any test module::

    from tests.smtp_fixture import smtp_server_fixture  # noqa: F401  (registers smtp_server)

    def test_x(smtp_server):
        settings = Settings(..., **smtp_server.settings())
        ...
        [msg] = smtp_server.wait_for(1)
        assert "leak" in msg.text()

``wait_for(n)`` blocks until at least ``n`` messages arrived (or fails after a timeout), since
notifications are delivered in the background. ``fail_next(k, code)`` makes the server answer
the next ``k`` DATA commands with a temporary failure, to exercise retries.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.support.live import free_port


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    def text(self) -> str:
        """The plain-text part (or the whole body when the message is not multipart)."""
        part = self.message.get_body(preferencelist=("plain",))
        return str(part.get_content()) if part is not None else ""

    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return str(part.get_content()) if part is not None else ""


@dataclass
class _Handler:
    messages: list[ReceivedMail] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    fail_remaining: int = 0
    fail_code: str = "451 4.3.0 temporary failure (test)"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.cond:
            if self.fail_remaining > 0:
                self.fail_remaining -= 1
                return self.fail_code
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.cond:
            self.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), msg))
            self.cond.notify_all()
        return "250 OK"


class SmtpServer:
    def __init__(self, controller: Controller, handler: _Handler, port: int) -> None:
        self._controller = controller
        self._handler = handler
        self.host = "127.0.0.1"
        self.port = port

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._handler.cond:
            return list(self._handler.messages)

    def settings(self) -> dict[str, Any]:
        """Settings overrides that point Quarry at this server."""
        return {"smtp_host": self.host, "smtp_port": self.port, "smtp_tls": False}

    def wait_for(self, n: int, timeout: float = 10.0) -> list[ReceivedMail]:
        deadline = time.monotonic() + timeout
        with self._handler.cond:
            while len(self._handler.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {n} email(s) within {timeout}s, got {len(self._handler.messages)}: "
                        f"{[m.subject for m in self._handler.messages]}"
                    )
                self._handler.cond.wait(left)
            return list(self._handler.messages)

    def fail_next(self, k: int, code: str = "451 4.3.0 temporary failure (test)") -> None:
        with self._handler.cond:
            self._handler.fail_remaining = k
            self._handler.fail_code = code

    def clear(self) -> None:
        with self._handler.cond:
            self._handler.messages.clear()


def start_smtp_server() -> SmtpServer:
    """Start a server on a free loopback port (retrying if another process takes the port)."""
    last: Exception | None = None
    for _ in range(5):
        handler = _Handler()
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=5.0)
        try:
            controller.start()
        except Exception as e:  # port taken between choosing and binding
            last = e
            continue
        return SmtpServer(controller, handler, port)
    raise RuntimeError(f"could not start the test SMTP server: {last}")


def stop_smtp_server(server: SmtpServer) -> None:
    server._controller.stop()


@pytest.fixture(name="smtp_server")
def smtp_server_fixture() -> Iterator[SmtpServer]:
    server = start_smtp_server()
    try:
        yield server
    finally:
        stop_smtp_server(server)


# Importing either name makes the ``smtp_server`` fixture available to a test module.
smtp_server = smtp_server_fixture
