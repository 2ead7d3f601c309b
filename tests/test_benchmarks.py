"""Smoke tests of the benchmarks: their servers behave, and a tiny run produces every figure.

Nothing here asserts a speed (speed is measured in benchmarks/, never asserted by a test);
it asserts that the harness measures what it says it measures.
"""

from __future__ import annotations

import json
import smtplib
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import peers  # noqa: E402
import run as bench  # noqa: E402
import sink  # noqa: E402
from common import helper  # noqa: E402


def _get(url: str, etag: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"If-None-Match": etag} if etag else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""


def test_feed_server_answers_conditional_gets_and_moves_through_the_day() -> None:
    with helper("feedsrv.py", "--feeds", "3", "--entries", "4", "--delay", "0.01", "--spread", "0.2", lifetime=60) as server:
        base = f"http://127.0.0.1:{server.port}"
        status, headers, body = _get(f"{base}/slow/f2.xml")
        assert status == 200 and body.count(b"<item>") == 4
        assert _get(f"{base}/spread/f2.xml")[2] == body  # the same feed, answered at its own pace
        assert _get(f"{base}/slow/f2.xml", headers["ETag"])[0] == 304
        assert _get(f"{base}/slow/f3.xml")[0] == 404  # only feeds 0..2 exist
        counts = []
        for generation in range(4):
            peers.set_generation(server.port, generation)
            counts.append(_get(f"{base}/day/f0.xml")[2].count(b"<item>"))
        assert counts == sorted(counts) and counts[0] < counts[-1] <= 10
        stats = json.loads(_get(f"{base}/_stats")[2])
        assert stats["304"] == 1 and stats["404"] == 1


def test_sink_accepts_and_counts_messages() -> None:
    message = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\n" + b".dot line\r\nbody\r\n" * 200
    with helper("sink.py", lifetime=60) as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as conn:
            for _ in range(3):
                conn.sendmail("a@example.com", ["b@example.com"], message)
        messages, size = sink.count(server.extra["STATS"])
    assert messages == 3
    assert size >= 3 * len(message)  # the sink keeps dot-stuffing: it only counts


def test_tiny_run_writes_every_figure_and_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "latest.json"
    assert bench.main(["--tiny", "--no-rss2email", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results["targets"]) >= {"poll_vs_floor", "poll_304_cpu_s", "delivery_vs_ceiling", "day_s"}
    assert results["fetch"]["feeds"] == bench.TINY.feeds and results["fetch"]["floor_s"] == pytest.approx(0.2)
    assert results["parse"]["entries"] == bench.TINY.feeds * bench.TINY.entries
    assert results["delivery"]["c4"]["messages"] == bench.TINY.messages
    assert results["digest_cli_poll_spread"]["round1_s"] > 0
    day = results["day"]
    assert f"delivered to {bench.TINY.subscribers} of {bench.TINY.subscribers}" in day["send_summary"]
    assert "rss2email not installed" in results["rss2email"]["skipped"] or "skipped" in results["rss2email"]
    printed = capsys.readouterr().out
    assert "poll_vs_floor" in printed and "rss2email" in printed


@pytest.mark.skipif(peers.find_r2e() is None, reason="rss2email is a benchmark-only dependency (pip install rss2email)")
def test_rss2email_polls_and_sends_to_the_same_sink(tmp_path: Path) -> None:
    binary = peers.find_r2e()
    assert binary is not None
    with (
        helper("feedsrv.py", "--feeds", "2", "--entries", "3", "--delay", "0.01", lifetime=120) as feeds,
        helper("sink.py", lifetime=120) as smtp,
    ):
        result = peers.r2e(binary, tmp_path, feeds.port, smtp.port, 2, lambda: sink.count(smtp.extra["STATS"]))
    assert result["messages"] == 2  # digest mode: one message per feed
    assert result["poll_s"] > 0 and result["messages_per_s"] > 0
