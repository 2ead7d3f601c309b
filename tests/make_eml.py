"""Build the .eml files the email checker judges: the sample edition and a 150-story one.

    python tests/make_eml.py OUTDIR      # writes OUTDIR/sample.eml and OUTDIR/big.eml

Both go through the real CLI (`digest send` into a Maildir) from a copy of the bundled
config.toml, with a public base_url so that one-click unsubscribe is in the headers.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

from click.testing import CliRunner

from digest.cli import main

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-21T07:00:00+00:00"
BASE_URL = "https://orbitdaily.example"
ORGS = [
    "Nasa",
    "Esa",
    "Jaxa",
    "Isro",
    "Cnes",
    "Dlr",
    "Asi",
    "Kari",
    "Csa",
    "Uksa",
    "Roscosmos",
    "Arianespace",
    "Rocket-Lab",
    "Vega-Works",
    "Orbex",
]
VERBS = [
    "picks",
    "delays",
    "funds",
    "tests",
    "cancels",
    "books",
    "signs for",
    "orders",
    "reviews",
    "launches",
    "studies",
    "doubles",
]
THINGS = [
    "a weather satellite",
    "two relay craft",
    "a lunar lander",
    "an engine test stand",
    "a tracking radar",
    "new ground stations",
    "a crew capsule",
    "a cargo tug",
    "the heat shield",
    "a debris sweeper",
    "a solar sail",
    "a Mars orbiter",
    "a small probe",
]
PLACES = [
    "Chile",
    "Norway",
    "Kenya",
    "Peru",
    "Japan",
    "Spain",
    "Ghana",
    "Oman",
    "Fiji",
    "Chad",
    "Laos",
    "Iran",
    "Iraq",
    "Cuba",
    "Mali",
    "Togo",
    "Nepal",
]
SYLLABLES = ["ka", "lo", "mi", "ru", "te", "sa", "vo", "ni", "pa", "de", "zu", "ro", "ba", "fi", "go", "ha"]


def _story(i: int) -> tuple[str, str]:
    """A plausible, unique headline and teaser (real prose: no spam-like word runs)."""
    pick = random.Random(i)
    name = "".join(SYLLABLES[(i >> (4 * k)) % 16] for k in range(3)).capitalize() + str(i + 1)
    title = f"{pick.choice(ORGS)} {pick.choice(VERBS)} {pick.choice(THINGS)} in {pick.choice(PLACES)} for {name}"
    summary = (
        f"The {name} plan, first set out in {2020 + i % 6}, is now due to fly in {2027 + i % 4}. "
        f"Its team says the cost is up by a tenth, and that a new test is set for May. "
        f"A full report on what went wrong, and why, is due out by the end of the year."
    )
    return title, summary


def sample_eml(workdir: Path, recipient: str = "ada@example.com") -> Path:
    """The bundled config and sample feeds, sent once; returns the recipient's message."""
    shutil.copy(ROOT / "config.toml", workdir / "config.toml")
    shutil.copytree(ROOT / "examples", workdir / "examples", dirs_exist_ok=True)
    config = workdir / "config.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('base_url = ""', f'base_url = "{BASE_URL}"', 1), encoding="utf-8")
    return _send(config, recipient)


def big_eml(workdir: Path, stories: int = 150) -> Path:
    """One feed with `stories` distinct items (some with images), nothing capped by max_stories."""
    (workdir / "big.xml").write_text(big_feed(stories), encoding="utf-8")
    (workdir / "config.toml").write_text(
        f"""[newsletter]
title = "Orbit Daily"
tagline = "Our daily space industry news, straight into your inbox"
from = "Orbit Daily <news@orbitdaily.example>"
reply_to = "editor@orbitdaily.example"
base_url = "{BASE_URL}"
max_stories = {stories + 50}
postal_address = "Orbit Daily, 1 Launch Pad Way, Cape Example"

[[feeds]]
name = "The Extremely Long-Named International Orbital Affairs Correspondent"
url = "big.xml"
section = "News"

[[subscribers]]
email = "maximiliana.von-hohenzollern-sigmaringen@subscribers.orbitdaily.example"
name = "Maximiliana Theodora von Hohenzollern-Sigmaringen"
""",
        encoding="utf-8",
    )
    return _send(workdir / "config.toml", "maximiliana")


def big_feed(count: int) -> str:
    """RSS with `count` items whose titles share few words, so no grouping merges them."""
    now = datetime.fromisoformat(NOW).astimezone(UTC)
    items = []
    for i in range(count):
        title, summary = _story(i)
        link = f"https://wire.example/2026/11/{i + 1:03d}-story"
        image = f'<enclosure url="{link}.jpg" type="image/jpeg" length="1000"/>' if i % 7 == 0 else ""
        when = format_datetime(now - timedelta(minutes=9 * i + 5))
        items.append(
            f"<item><title>{escape(title)}</title><link>{link}</link><guid>{link}</guid>"
            f"<pubDate>{when}</pubDate><description>{escape(summary)}</description>{image}</item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel><title>Big</title>'
        "<link>https://wire.example/</link><description>stress</description>" + "\n".join(items) + "</channel></rss>\n"
    )


def _send(config: Path, recipient: str) -> Path:
    result = CliRunner().invoke(main, ["--config", str(config), "send", "--now", NOW])
    if result.exit_code != 0:
        raise RuntimeError(f"digest send failed: {result.output}{result.stderr}")
    for path in sorted((config.parent / "outbox" / "new").iterdir()):
        if recipient.encode() in path.read_bytes().split(b"\r\n\r\n", 1)[0]:
            return path
    raise RuntimeError(f"no message for {recipient} in {config.parent / 'outbox'}")


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    for name, build in (("sample.eml", sample_eml), ("big.eml", big_eml)):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(build(Path(tmp)), out / name)
        print(out / name)
