"""The preview in a real headless Chromium (issue 6): screenshots at 600 and 375 px, no overflow.

Debian's `chromium` (CI installs it via apt in .ci/run). Skipped only on a developer machine
without it; with CI set, a missing browser fails the run.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SUBSCRIBERS, sample_feeds, write_config
from test_preview import DAY1, base_tables, expected_edition, preview_server

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # feed images point elsewhere: never fetched
]


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI must run the browser test (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return CHROMIUM


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("browser")
    config = write_config(folder / "config.toml", base_tables(), sample_feeds(folder), SUBSCRIBERS)
    with preview_server(config, "--now", DAY1) as url:
        yield config, url


def run_chromium(binary: str, profile: Path, *args: str) -> str:
    result = subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def png_summary(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the pixel data): enough to tell a blank image."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            chunks.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    pixels = zlib.decompress(b"".join(chunks))
    return width, height, len(set(pixels[: 4 * width * 400]))


@pytest.mark.parametrize("width", [600, 375])
def test_email_renders_in_chromium_without_overflow(
    chromium: str, site: tuple[Path, str], tmp_path: Path, width: int
) -> None:
    config, url = site
    shot = tmp_path / f"email-{width}.png"
    run_chromium(chromium, tmp_path / "p1", f"--window-size={width},2000", f"--screenshot={shot}", url + "/email")
    shot_w, shot_h, distinct = png_summary(shot.read_bytes())
    assert (shot_w, shot_h) == (width, 2000)
    assert distinct > 20  # not a blank page: text, header band, rules
    keep = os.environ.get("KEEP_SCREENSHOTS")
    if keep:
        shutil.copy(shot, Path(keep) / shot.name)

    dom = run_chromium(
        chromium, tmp_path / "p2", "--window-size=1000,2200", "--virtual-time-budget=5000", "--dump-dom",
        f"{url}/check?width={width}",
    )
    found = re.search(r'<pre id="measure" data-scroll-width="(\d+)" data-client-width="(\d+)" '
                      r'data-inner-width="(\d+)">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    scroll, client, inner = (int(found[i]) for i in (1, 2, 3))
    assert inner == width and width - 20 <= client <= width
    assert scroll <= client, f"layout overflows at {width} px: {scroll} px wide"
    rendered_text = " ".join(html.unescape(found[4]).split())
    edition = expected_edition(config, DAY1)
    assert edition.stories
    for story in edition.stories:
        assert " ".join(story.lead.title.split()) in rendered_text
