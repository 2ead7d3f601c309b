"""Config is validated once at load; every problem is named with file and key path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT

from digest import config as config_mod
from digest.cli import main
from digest.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "feed.xml").write_text("<rss version='2.0'><channel><title>t</title></channel></rss>")
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
[newsletter]
title = "T"
from = "T <t@example.com>"

[[feeds]]
name = "A"
url = "feed.xml"
"""


def test_bundled_config_loads_with_relative_paths_resolved() -> None:
    cfg = config_mod.load(ROOT / "config.toml")
    assert cfg.delivery.transport == "maildir"
    assert cfg.delivery.maildir == ROOT / "outbox"
    assert cfg.state_path == ROOT / ".digest" / "state.sqlite3"
    assert len(cfg.feeds) >= 4 and all(Path(f.url).is_file() for f in cfg.feeds)
    assert {"Politics", "Launch", "Commercial", "Military"} <= set(cfg.sections)
    assert cfg.subscribers


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path, GOOD))
    assert cfg.schedule.send_at == "07:00"
    assert cfg.schedule.poll_every == 3600
    assert cfg.schedule.send_if_empty is False
    assert cfg.smtp.password_env == "DIGEST_SMTP_PASSWORD"
    assert cfg.web.listen == "127.0.0.1:8025"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[newsletter]\ncolour = 'red'\n", "newsletter.colour: unknown key"),
        ("[schedule]\nsend_at = '7am'\n", 'schedule.send_at: expected a time "HH:MM"'),
        ("[schedule]\npoll_every = 'often'\n", "schedule.poll_every: expected a duration"),
        ("[smtp]\nport = 70000\n", "smtp.port: must be between 1 and 65535"),
        ("[smtp]\nsecurity = 'ssl'\n", "smtp.security: must be one of 'none', 'starttls', 'tls'"),
        ("[smtp]\nrate_per_second = 'fast'\n", "smtp.rate_per_second: expected a number"),
        ("[delivery]\ntransport = 'pigeon'\n", "delivery.transport: must be one of"),
        ("[grouping]\nthreshold = 2\n", "grouping.threshold: must be between 0.0 and 1.0"),
        ("[fetch]\nmax_bytes = 'big'\n", "fetch.max_bytes: expected an integer"),
        ("[mystery]\na = 1\n", "mystery: unknown table"),
        ("[[feeds]]\nname = 'B'\nurl = 'ftp://x.example/feed'\n", "feeds[1].url: only http(s) URLs"),
        ("[[feeds]]\nname = 'B'\nurl = 'missing.xml'\n", "feeds[1].url: local feed file not found"),
        ("[[feeds]]\nname = 'A'\nurl = 'feed.xml'\n", "feeds[1].name: duplicate feed name"),
        ("[[subscribers]]\nemail = 'not-an-address'\n", "subscribers[0].email: not a valid email address"),
        (
            "[[subscribers]]\nemail = 'a@example.com'\ntopics = ['Nope']\n",
            "subscribers[0].topics: unknown topic 'Nope'",
        ),
    ],
)
def test_each_problem_names_file_and_key(tmp_path: Path, extra: str, message: str) -> None:
    # tables that GOOD already has are merged by writing the extra keys after a fresh header
    text = GOOD.replace("[newsletter]", "[newsletter]", 1)
    if extra.startswith("[newsletter]"):
        text = text.replace('title = "T"', 'title = "T"\n' + extra.split("\n", 1)[1])
    else:
        text += "\n" + extra
    with pytest.raises(ConfigError) as err:
        config_mod.load(write(tmp_path, text))
    assert str(tmp_path / "config.toml") in str(err.value)
    assert message in str(err.value)


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = GOOD + "\n[smtp]\nport = 0\nsecurity = 'x'\n[schedule]\nsend_at = '25:00'\n"
    with pytest.raises(ConfigError) as err:
        config_mod.load(write(tmp_path, text))
    message = str(err.value)
    assert message.startswith("3 problems in config")
    assert "smtp.port" in message and "smtp.security" in message and "schedule.send_at" in message
    assert "\n" not in message


def test_cli_prints_one_line_error_and_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n[smtp]\nport = 'x'\n")
    before = path.read_bytes()
    result = CliRunner().invoke(main, ["--config", str(path), "send"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "smtp.port" in lines[0]
    assert "Traceback" not in result.output
    assert path.read_bytes() == before
    assert not (tmp_path / ".digest").exists()


def test_verbose_shows_the_traceback_even_for_a_command_that_logs_nothing(tmp_path: Path) -> None:
    """status skips logging unless -v; with -v its error still comes with the traceback."""
    path = write(tmp_path, GOOD + "\n[smtp]\nport = 'x'\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "digest", "--config", str(path)]
    quiet = subprocess.run([*command, "status"], env=env, capture_output=True, text=True, timeout=60, check=False)
    loud = subprocess.run([*command, "-v", "status"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert quiet.returncode == loud.returncode == 1
    assert quiet.stderr.startswith("Error: ") and "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr and "ConfigError" in loud.stderr and "smtp.port" in loud.stderr


def test_missing_config_file_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "nope.toml"), "status"])
    assert result.exit_code == 1
    assert "config file not found" in result.stderr and "--config" in result.stderr


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(write(tmp_path, "[newsletter\n")), "send"])
    assert result.exit_code == 1 and "not valid TOML" in result.stderr


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("DIGEST_CONFIG", str(path))
    assert config_mod.resolve_path(None) == path
    assert config_mod.resolve_path("other.toml") == Path("other.toml")


def test_bad_now_is_a_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(write(tmp_path, GOOD)), "send", "--now", "yesterday"])
    assert result.exit_code == 1 and "not an ISO 8601 time" in result.stderr
    result = CliRunner().invoke(main, ["--config", str(write(tmp_path, GOOD)), "send", "--now", "2026-11-21T07:00"])
    assert result.exit_code == 1 and "no UTC offset" in result.stderr


def test_usage_error_exits_2() -> None:
    result = CliRunner().invoke(main, ["send", "--no-such-option"])
    assert result.exit_code == 2
