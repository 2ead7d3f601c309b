"""Part of the fetch stage: a response body, decoded under the decompressed-size cap.

gzip and deflate come with Python; brotli and zstd only when their well-kept decoders are
installed (the `compression` extra), and only then are they announced in Accept-Encoding.
Every decoder is driven so that its output per step is bounded: a 1 KiB bomb that inflates
to gigabytes is cut at the cap with at most a chunk or so beyond it in memory.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from typing import Any

_CHUNK = 64 * 1024


class Refused(Exception):
    """A URL, address or body the fetch policy does not allow; the message is the reason."""


class TooLarge(Exception):
    pass


class Body:
    """Collects a body, decoding gzip/deflate/br/zstd at most `cap` + 1 bytes at a time."""

    def __init__(self, encoding: str, cap: int) -> None:
        self.encoding = encoding.lower()
        if self.encoding not in ("identity", "gzip", "x-gzip", "deflate", *_optional_decoders()):
            raise Refused(f"refused content: unsupported Content-Encoding {encoding[:40]!r}")
        self.cap = cap
        self.size = 0
        self.parts: list[bytes] = []
        self.inflater: Any = None
        if self.encoding == "br":
            self.inflater = _brotli().Decompressor()
        elif self.encoding == "zstd":  # the writer hands on at most write_size bytes at a time
            self.inflater = _zstd().ZstdDecompressor().stream_writer(_Sink(self._add), write_size=_CHUNK)

    def feed(self, data: bytes) -> None:
        if self.encoding == "identity":
            self._add(data)
        elif self.encoding == "br":
            self._brotli(data)
        elif self.encoding == "zstd":
            try:
                self.inflater.write(data)
            except _zstd().ZstdError as exc:
                raise Refused(f"refused content: broken zstd body ({exc})") from None
        else:
            self._inflate(data)

    def _inflate(self, data: bytes) -> None:
        if self.inflater is None and data:
            zlib_header = len(data) > 1 and data[0] & 0x0F == 8 and (data[0] * 256 + data[1]) % 31 == 0
            wbits = 47 if "gzip" in self.encoding else (15 if zlib_header else -15)
            self.inflater = zlib.decompressobj(wbits)
        while data:
            try:
                out = self.inflater.decompress(data, self.cap - self.size + 1)
            except zlib.error as exc:
                raise Refused(f"refused content: broken {self.encoding} body ({exc})") from None
            self._add(out)
            data = self.inflater.unconsumed_tail

    def _brotli(self, data: bytes) -> None:
        try:
            self._add(self.inflater.process(data, output_buffer_limit=self.cap - self.size + 1))
            while not self.inflater.can_accept_more_data():
                self._add(self.inflater.process(b"", output_buffer_limit=self.cap - self.size + 1))
        except _brotli().error as exc:
            raise Refused(f"refused content: broken br body ({exc})") from None

    def _add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.cap:
            raise TooLarge
        self.parts.append(data)

    def value(self) -> bytes:
        if self.encoding == "zstd":
            self.inflater.flush()
        elif self.encoding == "br":
            if not self.inflater.is_finished():
                raise Refused("refused content: broken br body (truncated)")
        elif self.inflater is not None:
            self._add(self.inflater.flush())
        return b"".join(self.parts)


class _Sink:
    """Where zstandard's stream writer puts what it decodes."""

    def __init__(self, add: Callable[[bytes], None]) -> None:
        self.add = add

    def write(self, data: bytes) -> int:
        self.add(bytes(data))
        return len(data)


@functools.cache
def _brotli() -> Any:
    """The brotli module if installed and new enough to bound its output (1.2), else None."""
    try:
        import brotli
    except ImportError:
        return None
    return brotli if hasattr(brotli.Decompressor(), "can_accept_more_data") else None


@functools.cache
def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def _optional_decoders() -> tuple[str, ...]:
    return (*(("br",) if _brotli() else ()), *(("zstd",) if _zstd() else ()))


def accepted_encodings() -> str:
    """The Accept-Encoding we send: only what we can decode under the cap."""
    return ", ".join(("gzip", "deflate", *_optional_decoders()))
