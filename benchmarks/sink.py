"""The benchmark SMTP sink: aiosmtpd on 127.0.0.1, accepting and discarding, in --workers processes.

Prints `PORT n` (SMTP) and `STATS n` (connect there to read the number of messages
accepted so far), then `READY`; exits by itself after --lifetime seconds.

One aiosmtpd process tops out near the rate one Python client reaches, so with several
client connections the sink, not the client, would be what is measured. `--workers N`
forks N server processes after the listening socket is made; each accepts on it (the
kernel hands each new connection to one of them), so N connections can be served on N
cores. Counts live in shared memory, one slot per worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import time
from multiprocessing.sharedctypes import RawArray
from typing import Any

from aiosmtpd.smtp import SMTP


class FastSMTP(SMTP):
    """aiosmtpd with DATA read in 64 KiB chunks instead of line by line.

    Stock aiosmtpd reads DATA one line at a time (about 190 messages/s of 37 KB on this
    machine), which would make the sink, not the client, the thing measured. The sink
    only counts what it receives, so dot-unstuffing and line checks are skipped.
    """

    reply_delay = 0.0

    async def push(self, status: Any) -> None:
        if self.reply_delay:  # a slow relay: every reply late
            await asyncio.sleep(self.reply_delay)
        await super().push(status)

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if self.envelope is None or not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data = bytearray()
        self._reader._limit = 1 << 20  # type: ignore[attr-defined] # else the transport pauses every 2 KB
        while not (data.endswith(b"\r\n.\r\n") or data == b".\r\n"):
            chunk = await self._reader.read(1 << 16)
            if not chunk:
                return
            data += chunk
        self.envelope.content = self.envelope.original_content = bytes(data[:-3])
        status = await self._call_handler_hook("DATA")
        await self.push(status)
        self._set_post_data_state()


class Counting:
    """Counts into this worker's two slots of the shared array: messages, bytes."""

    def __init__(self, counts: Any, slot: int) -> None:
        self.counts, self.slot = counts, slot

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.counts[2 * self.slot] += 1
        self.counts[2 * self.slot + 1] += len(envelope.content or b"")
        return "250 OK"


class LeanSMTP(asyncio.Protocol):
    """A minimal SMTP server (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; PIPELINING):
    a few microseconds per command where aiosmtpd spends a few hundred, so that with the
    sink and the client on the same cores the client is what is measured (`--lean`)."""

    def __init__(self, counts: Any, slot: int, delay: float) -> None:
        self.counts, self.slot, self.delay = counts, slot, delay
        self.buffer = b""
        self.in_data = False
        self.rcpts = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(b"220 sink.localhost ESMTP bench-sink\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies = []
        while self.buffer:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0 and self.buffer.startswith(b".\r\n"):
                    end = -2
                if end < 0:
                    break
                self.counts[2 * self.slot] += 1
                self.counts[2 * self.slot + 1] += max(0, end + 2)
                self.buffer = self.buffer[end + 5 :]
                self.in_data, self.rcpts = False, 0
                replies.append(b"250 OK")
                continue
            line, sep, rest = self.buffer.partition(b"\r\n")
            if not sep:
                break
            self.buffer = rest
            verb = line[:4].upper()
            if verb == b"EHLO":
                replies.append(b"250-sink.localhost\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 SMTPUTF8")
            elif verb == b"RCPT":
                self.rcpts += 1
                replies.append(b"250 OK")
            elif verb == b"DATA":
                if self.rcpts:
                    self.in_data = True
                    replies.append(b"354 End data with <CR><LF>.<CR><LF>")
                else:
                    replies.append(b"503 Error: need RCPT command")
            elif verb == b"QUIT":
                replies.append(b"221 Bye")
                self.reply(replies)
                self.transport.close()
                return
            elif verb == b"RSET":
                self.rcpts = 0
                replies.append(b"250 OK")
            else:  # HELO, MAIL, NOOP
                replies.append(b"250 OK")
        if replies:
            self.reply(replies)

    def reply(self, replies: list[bytes]) -> None:
        out = b"\r\n".join(replies) + b"\r\n"
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, self.transport.write, out)
        else:
            self.transport.write(out)


def serve(listener: socket.socket, counts: Any, slot: int, kind: str, delay: float, lifetime: float) -> None:
    """One worker: aiosmtpd (or LeanSMTP) on the shared listening socket until `lifetime` is over."""

    async def main() -> None:
        cls = FastSMTP if kind == "fast" else SMTP
        handler = Counting(counts, slot)

        def factory() -> asyncio.Protocol:
            if kind == "lean":
                return LeanSMTP(counts, slot, delay)
            server = cls(handler, hostname="sink.localhost", ident="bench-sink", data_size_limit=0)
            server.reply_delay = delay  # type: ignore[attr-defined]
            return server

        server = await asyncio.get_running_loop().create_server(factory, sock=listener)
        await asyncio.sleep(lifetime)
        server.close()

    asyncio.run(main())


async def stats_server(counts: Any, lifetime: float) -> None:
    async def stats(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{sum(counts[0::2])} {sum(counts[1::2])}\n".encode())
        await writer.drain()
        writer.close()

    side = await asyncio.start_server(stats, "127.0.0.1", 0)
    print("STATS", side.sockets[0].getsockname()[1], flush=True)
    print("READY", flush=True)
    await asyncio.sleep(lifetime)
    side.close()


def run(workers: int, kind: str, delay: float, lifetime: float) -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    listener.setblocking(False)
    counts = RawArray("q", 2 * workers)
    children = []
    for slot in range(workers):
        pid = os.fork()  # before any thread or event loop exists here
        if pid == 0:
            try:
                serve(listener, counts, slot, kind, delay, lifetime)
            finally:
                os._exit(0)
        children.append(pid)
    print("PORT", listener.getsockname()[1], flush=True)
    started = time.monotonic()
    try:
        asyncio.run(stats_server(counts, lifetime))
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = started + lifetime + 10
        for pid in children:
            while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
                time.sleep(0.05)


def count(stats_port: int) -> tuple[int, int]:
    """(messages, bytes) the sink has accepted so far."""
    with socket.create_connection(("127.0.0.1", stats_port), timeout=10) as conn:
        messages, size = conn.makefile().readline().split()
    return int(messages), int(size)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lifetime", type=float, default=900.0)
    parser.add_argument("--workers", type=int, default=1, help="server processes sharing the port")
    parser.add_argument("--delay", type=float, default=0.0, help="milliseconds before every reply")
    kinds = parser.add_mutually_exclusive_group()
    kinds.add_argument("--stock", dest="kind", action="store_const", const="stock", help="stock aiosmtpd DATA")
    kinds.add_argument("--lean", dest="kind", action="store_const", const="lean", help="LeanSMTP instead of aiosmtpd")
    parser.set_defaults(kind="fast")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    run(max(1, args.workers), args.kind, args.delay / 1000, args.lifetime)
