"""A small real HTTP proxy on 127.0.0.1: CONNECT tunnels and absolute-URI GETs.

It records every request line and its headers, resolves names only from its own table
(`names`; IP literals as they are) and connects to loopback only, so a test can see what
a fetch asked of it and nothing ever leaves the machine.
"""

from __future__ import annotations

import selectors
import socket
import socketserver
import threading
from urllib.parse import urlsplit


class ProxyServer:
    def __init__(self, names: dict[str, str] | None = None) -> None:
        self.names = names or {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.stop_event = threading.Event()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy.serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()

    def lines(self) -> list[str]:
        return [line for line, _ in self.requests]

    def serve(self, client: socket.socket) -> None:
        client.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            data = client.recv(4096)
            if not data:
                return
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(h.split(": ", 1) for h in header_lines if ": " in h)
        self.requests.append((line, headers))
        method, target, _version = line.split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = self.open(host.strip("[]"), int(port))
            if upstream is None:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
        else:
            parts = urlsplit(target)
            upstream = self.open(parts.hostname or "", parts.port or 80)
            if upstream is None:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            kept = [h for h in header_lines if not h.lower().startswith(("proxy-", "connection"))]
            upstream.sendall(f"{method} {path} HTTP/1.0\r\n".encode() + "\r\n".join(kept).encode("latin-1")
                             + b"\r\nConnection: close\r\n\r\n" + rest)
        self.pipe(client, upstream)

    def open(self, host: str, port: int) -> socket.socket | None:
        address = self.names.get(host, host)
        if address not in ("127.0.0.1", "::1"):
            return None
        return socket.create_connection((address, port), timeout=5)

    def pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        """Relays both ways until either side closes (or 10 s pass)."""
        with selectors.DefaultSelector() as selector, upstream:
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            for _ in range(200):
                if self.stop_event.is_set():
                    return
                for key, _ in selector.select(timeout=0.05):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = source.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    key.data.sendall(data)
