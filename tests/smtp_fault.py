"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 with injected faults.

Faults are rules matched per command (MAIL, RCPT, DATA), optionally per recipient, each
used `times` times: reply with a code (4xx/5xx, 421 closes the connection) or drop the
connection without a reply, or delay. The server records every accepted message.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Fault:
    command: str  # "MAIL", "RCPT" or "DATA"
    code: int = 451
    text: str = "Try again later"
    rcpt: str | None = None  # only for this recipient
    times: int = 1  # -1: always
    drop: bool = False  # close the connection without replying
    delay: float = 0.0
    after: int = 0  # let this many matching commands through first (a fault mid-batch)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class _Handler:
    faults: list[Fault] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0

    def _fault(self, command: str, rcpts: list[str]) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.command == command and fault.times != 0 and (fault.rcpt is None or fault.rcpt in rcpts):
                    if fault.after > 0:
                        fault.after -= 1
                        continue
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    async def _apply(self, session: Session, command: str, rcpts: list[str]) -> str | None:
        if self.delay:
            await asyncio.sleep(self.delay)
        fault = self._fault(command, rcpts)
        if fault is None:
            return None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            transport: Any = session.transport if hasattr(session, "transport") else None
            if transport is not None:
                transport.abort()
            return "421 dropped"  # never seen by the client
        if fault.code == 421 and getattr(session, "transport", None) is not None:
            asyncio.get_running_loop().call_later(0.05, session.transport.close)
        return f"{fault.code} {fault.text}"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = await self._apply(session, "MAIL", [])
        if reply:
            return reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = await self._apply(session, "RCPT", [address])
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await self._apply(session, "DATA", list(envelope.rcpt_tos))
        if reply:
            return reply
        data = envelope.original_content or b""
        with self.lock:
            self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), data))
        return "250 Message accepted"


class _CountingSMTP(SMTP):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.event_handler.connections += 1
        super().connection_made(transport)
        self.session.transport = transport  # type: ignore[attr-defined]


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FaultySMTPServer:
    def __init__(self) -> None:
        self.handler = _Handler()
        self.port = free_port()
        self.controller = _Controller(
            self.handler, hostname="127.0.0.1", port=self.port, decode_data=False, ready_timeout=10
        )

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def add_fault(self, fault: Fault) -> None:
        with self.handler.lock:
            self.handler.faults.append(fault)

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    @property
    def connections(self) -> int:
        return self.handler.connections

    def by_recipient(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = {}
        for item in self.received:
            for rcpt in item.rcpt_tos:
                out.setdefault(rcpt, []).append(item)
        return out
