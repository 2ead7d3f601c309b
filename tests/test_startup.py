"""Start-up stays cheap: each command imports only what it uses (issue 17).

What is checked is which modules a fresh interpreter has loaded, not how long it took
(times are measured by benchmarks/startup.py, never asserted).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from conftest import ROOT, MakeConfig
from hypothesis import given, settings
from hypothesis import strategies as st

from digest import config as config_mod
from digest.store import Store

HEAVY = ("premailer", "apscheduler", "starlette", "uvicorn", "feedparser", "jinja2", "lxml", "cssutils")


def loaded_after(code: str) -> set[str]:
    """The top-level modules (and digest's own) a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    names = json.loads(done.stdout.strip().splitlines()[-1])
    return {n for n in names if n.startswith("digest.")} | {n.split(".")[0] for n in names}


def test_importing_the_cli_loads_no_inliner_scheduler_web_framework_or_parser() -> None:
    loaded = loaded_after("import digest.cli")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert not {"digest.pipeline", "digest.group", "digest.render", "digest.models", "email_validator"} & loaded


def test_the_package_names_still_resolve_on_first_use() -> None:
    import digest

    assert digest.send_edition.__module__ == "digest.pipeline"
    assert digest.load_config is config_mod.load
    for name in digest.__all__:  # every advertised name resolves (Config moved to digest.settings)
        assert getattr(digest, name) is not None, name
    assert digest.Config.__module__ == "digest.settings"
    with pytest.raises(AttributeError):
        _ = digest.no_such_name  # type: ignore[attr-defined]


def test_help_and_a_config_load_stay_light() -> None:
    loaded = loaded_after("from digest.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert not loaded & set(HEAVY)
    assert "digest.config" not in loaded
    assert "logging" not in loaded  # 8 ms: only commands that log load it


def test_a_poll_answered_by_304s_needs_no_feed_parser_nor_renderer(make_config: MakeConfig) -> None:
    """`digest fetch` imports the fetcher, not premailer, jinja2 or the grouping; feedparser
    only once a feed sent a body (the bundled sample feeds are files: they always do)."""
    config = make_config()
    loaded = loaded_after(
        "from digest.cli import main\n"
        f"try:\n    main(['--config', {str(config)!r}, 'fetch'])\nexcept SystemExit:\n    pass"
    )
    assert {"digest.fetch", "digest.parse"} <= loaded
    assert not {"premailer", "jinja2", "apscheduler", "digest.group", "digest.render", "digest.inline"} & loaded
    assert "multiprocessing" not in loaded  # five bodies are parsed in-process: no worker pool to import
    assert "email_validator" not in loaded  # plain ASCII addresses are checked without it


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m digest --config CONFIG ARGS...` from this checkout, as a whole process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIGEST_SECRET": "test-secret"}
    command = [sys.executable, "-m", "digest", "--config", str(config), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done


def test_status_reads_the_state_without_building_stage_values(make_config: MakeConfig) -> None:
    """`digest status` reports an edition's story count from SQL: it creates none of the
    stage dataclasses (digest.models), which were a quarter of its start-up."""
    config = make_config()
    cli(config, "send", "--now", "2026-11-21T07:00:00+00:00")
    status = cli(config, "status")
    first = status.stdout.splitlines()[0]
    assert first.startswith("2026-11-21: ") and " stories; " in first and "sent" in first, status.stdout
    assert int(first.split(": ")[1].split()[0]) > 0
    loaded = loaded_after(
        "from digest.cli import main\n"
        f"try:\n    main(['--config', {str(config)!r}, 'status'])\nexcept SystemExit:\n    pass"
    )
    assert {"digest.config", "digest.store", "digest.settings"} <= loaded
    assert not {"digest.models", "secrets", "logging", *HEAVY} & loaded, sorted({"digest.models", "logging"} & loaded)


def test_status_counts_agree_with_the_edition_and_survive_an_older_state(make_config: MakeConfig) -> None:
    """status reads each edition's summary row; an edition recorded before that table
    existed (no row) is read from its JSON, with the same result."""
    config = make_config()
    for day in ("2026-11-20", "2026-11-21"):
        cli(config, "send", "--now", f"{day}T07:00:00+00:00")
    state = config_mod.load(config).state_path
    with Store(state) as store:
        editions = [store.edition(date(2026, 11, d)) for d in (20, 21)]
        decoded = {e.day: len(e.stories) for e in editions if e is not None}
        summaries = store.edition_summaries()
    assert [d for d, _, _ in summaries] == sorted(decoded, reverse=True)
    assert {d: n for d, n, _ in summaries} == decoded and all(decoded.values())
    before = cli(config, "status")
    with sqlite3.connect(state) as db:
        assert db.execute("DELETE FROM edition_summaries WHERE day='2026-11-20'").rowcount == 1
    after = cli(config, "status")
    assert after.stdout == before.stdout
    assert f"2026-11-20: {decoded[date(2026, 11, 20)]} stories; " in after.stdout


ADDRESS_CHARS = "abcXYZ019.-_+!#$%&'*/=?^`{|}~@"


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=ADDRESS_CHARS, min_size=1, max_size=40),
        st.from_regex(r"[a-z0-9._+-]{1,20}@([a-z0-9-]{1,12}\.){1,3}[a-zA-Z]{1,6}", fullmatch=True),
        st.sampled_from(["a@x.test", "a@b.local", "a@xn--bcher-kva.example", "a@ab--cd.com", "ä@x.com"]),
    )
)
def test_the_fast_address_check_agrees_with_email_validator(text: str) -> None:
    """The plain-ASCII fast path accepts only what email_validator accepts, normalised alike."""
    from email_validator import EmailNotValidError, validate_email

    fast = config_mod._plain_address(text)
    try:
        expected: str | None = validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError:
        expected = None
    if fast is not None:
        assert fast == expected
    try:
        checked: str | None = config_mod.check_email(text)
    except ValueError:
        checked = None
    assert checked == expected
