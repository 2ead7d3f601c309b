"""The benchmark SMTP sink: aiosmtpd in its own process on 127.0.0.1, accepting and discarding.

Prints `PORT n` (SMTP) and `STATS n` (connect there to read the number of messages
accepted so far), then `READY`; exits by itself after --lifetime seconds.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from aiosmtpd.smtp import SMTP


class FastSMTP(SMTP):
    """aiosmtpd with DATA read in 64 KiB chunks instead of line by line.

    Stock aiosmtpd reads DATA one line at a time (about 190 messages/s of 37 KB on this
    machine), which would make the sink, not the client, the thing measured. The sink
    only counts what it receives, so dot-unstuffing and line checks are skipped.
    """

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
    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        self.bytes += len(envelope.content or b"")
        return "250 OK"


async def main(args: argparse.Namespace) -> None:
    handler = Counting()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        lambda: (FastSMTP if args.fast else SMTP)(
            handler, hostname="sink.localhost", ident="bench-sink", data_size_limit=0
        ),
        "127.0.0.1",
        0,
        backlog=512,
    )

    async def stats(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{handler.messages} {handler.bytes}\n".encode())
        await writer.drain()
        writer.close()

    side = await asyncio.start_server(stats, "127.0.0.1", 0)
    print("PORT", smtp.sockets[0].getsockname()[1], flush=True)
    print("STATS", side.sockets[0].getsockname()[1], flush=True)
    print("READY", flush=True)
    await asyncio.sleep(args.lifetime)
    smtp.close()
    side.close()


def count(stats_port: int) -> tuple[int, int]:
    """(messages, bytes) the sink has accepted so far."""
    import socket

    with socket.create_connection(("127.0.0.1", stats_port), timeout=10) as conn:
        messages, size = conn.makefile().readline().split()
    return int(messages), int(size)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lifetime", type=float, default=900.0)
    parser.add_argument("--stock", dest="fast", action="store_false", help="stock aiosmtpd DATA (line by line)")
    asyncio.run(main(parser.parse_args()))
