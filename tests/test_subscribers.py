"""Subscribers in config.toml: byte-exact edits, validation, import, topics on a real send (issue 7)."""

from __future__ import annotations

import difflib
import os
import stat
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import MakeConfig, sample_feeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_fault import FaultySMTPServer

from digest import config as config_mod
from digest import config_edit
from digest import subscribers as subs
from digest.cli import main
from digest.store import Store

NOW = "2026-11-21T07:00:00+00:00"

COMMENTED = """\
# Orbit Daily — hand-edited config, "quotes" and ünïcödé 🚀 in comments
[newsletter]
title = "Orbit Daily"   # trailing comment
from = "Orbit Daily <news@orbitdaily.example>"
timezone = "UTC"
base_url = "https://news.example.com"

[delivery]
transport = "maildir"
maildir    =    "outbox"   # odd spacing kept

[[feeds]]
name = "Space Policy Review"
url = "feeds/space-policy-review.xml"
section = "Politics"

[[feeds]]
name = "Launch Report"  # the launch desk
url = "feeds/launch-report.atom"
section = "Launch"

[[feeds]]
name = "Commercial Orbit"
url = "feeds/commercial-orbit.atom"
section = "Commercial"

# ---- readers ----------------------------------------------------------
# Add people below.

[[subscribers]]
email = "ada@example.com"
name = 'Ada "the Countess" Lovelace'   # literal string
# she asked for everything

# Yuri only wants launches
[[subscribers]]
email = "yuri@example.com"
name = "Yuri"
topics = [ "Launch" ,  "Commercial" ]

[[subscribers]]
email = "valentina@example.org"
name = "Valentina"

# ---- web ---------------------------------------------------------------
[web]
listen = "127.0.0.1:8025"   # unsubscribe endpoint
"""


def run(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def commented(tmp_path: Path) -> Path:
    sample_feeds(tmp_path)
    path = tmp_path / "config.toml"
    path.write_text(COMMENTED, encoding="utf-8")
    config_mod.load(path)  # the fixture itself is valid
    return path


def only_insertions(before: str, after: str) -> bool:
    ops = difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes()
    return all(tag in ("equal", "insert") for tag, *_ in ops)


NAMES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=25),
    st.sampled_from(['O\'Brien "Bob"', "Zoë 🚀 Ångström", "\\back\\slash", "'''", '"""', "# not a comment", "a = b"]),
)


@settings(
    max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=NAMES,
    local=st.from_regex(r"[a-z][a-z0-9._+-]{0,12}", fullmatch=True).filter(lambda s: ".." not in s and s[-1] != "."),
    topics=st.lists(st.sampled_from(["Politics", "Launch", "Commercial"]), unique=True, max_size=2),
)
def test_add_then_remove_returns_the_file_byte_identical(
    commented: Path, name: str, local: str, topics: list[str]
) -> None:
    before = commented.read_bytes()
    email = f"{local}@new.example"
    args = [a for t in topics for a in ("--topic", t)]
    code, _out, err = run(commented, "subscribers", "add", email, "--name", name, *args)
    assert code == 0, err
    after = commented.read_text(encoding="utf-8")
    assert only_insertions(before.decode(), after)  # the rest of the file is untouched
    added = tomllib.loads(after)["subscribers"][-1]
    assert added["email"] == email and added.get("name", "") == name.strip()
    assert added.get("topics", []) == topics
    code, _out, err = run(commented, "subscribers", "remove", email)
    assert code == 0, err
    assert commented.read_bytes() == before


REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


@pytest.mark.parametrize("ending", ["as shipped", "no final newline", "blank lines at the end"])
def test_round_trip_on_the_shipped_config(tmp_path: Path, ending: str) -> None:
    text = REPO_CONFIG.read_text(encoding="utf-8").replace("examples/feeds/", "feeds/")
    text = {"as shipped": text, "no final newline": text.rstrip("\n"), "blank lines at the end": text + "\n\n"}[ending]
    sample_feeds(tmp_path)
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    for email in ("new@example.com", "ada@example.com", "valentina@example.org"):
        before = path.read_bytes()
        if email != "new@example.com":
            assert run(path, "subscribers", "remove", email)[0] == 0
            assert run(path, "subscribers", "add", email)[0] == 0  # now last: its own round trip below
            before = path.read_bytes()
        assert run(path, "subscribers", "add", "zz@example.com", "--name", "Z", "--topic", "Military")[0] == 0
        added = path.read_text(encoding="utf-8")
        assert added.endswith('[[subscribers]]\nemail = "zz@example.com"\nname = "Z"\ntopics = ["Military"]\n' + (
            "\n\n" if ending == "blank lines at the end" else ""))
        assert "\n\n[[subscribers]]\nemail = \"zz@" in added  # one blank line before the new entry
        assert run(path, "subscribers", "remove", "zz@example.com")[0] == 0
        if not before.endswith(b"\n"):  # the one byte an edit adds: a final newline
            before += b"\n"
        assert path.read_bytes() == before


def test_remove_keeps_comments_that_introduce_what_follows(commented: Path) -> None:
    assert run(commented, "subscribers", "remove", "ada@example.com")[0] == 0
    text = commented.read_text()
    assert "# Yuri only wants launches\n[[subscribers]]" in text
    assert "she asked for everything" not in text  # inside Ada's entry: gone with it
    assert run(commented, "subscribers", "remove", "valentina@example.org")[0] == 0
    assert "# ---- web ----" in commented.read_text()
    assert run(commented, "subscribers", "remove", "yuri@example.com")[0] == 0
    text = commented.read_text()
    assert "[[subscribers]]" not in text and "subscribers = []" not in text
    assert "# ---- readers" in text and "# ---- web ----" in text and "# Yuri only wants launches" in text
    assert config_mod.load(commented).subscribers == ()
    assert run(commented, "subscribers", "add", "ada@example.com")[0] == 0
    assert config_mod.load(commented).subscribers[0].email == "ada@example.com"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "not-an-address"], "not a valid email address"),
        (["add", "ada@EXAMPLE.com"], "already subscribed"),
        (["add", "new@example.com", "--topic", "Astrology"], "valid topics are Politics, Launch, Commercial"),
        (["add", "new@example.com", "--name", "two\nlines"], "one line"),
        (["remove", "nobody@example.com"], "no subscriber 'nobody@example.com'"),
        (["remove", "yuri@example.com", "nobody@example.com"], "no subscriber"),
    ],
)
def test_refusals_are_one_line_exit_1_and_leave_the_file_untouched(
    commented: Path, args: list[str], message: str
) -> None:
    before = commented.read_bytes()
    code, _out, err = run(commented, "subscribers", *args)
    assert code == 1
    assert err.startswith("Error: ") and err.count("\n") == 1 and message in err, err
    assert commented.read_bytes() == before
    assert sorted(p.name for p in commented.parent.iterdir() if p.name.startswith(".config")) == []


def test_duplicates_compare_the_domain_case_insensitively_and_the_local_part_as_written(commented: Path) -> None:
    assert run(commented, "subscribers", "add", "yuri@Example.COM")[0] == 1
    code, out, _ = run(commented, "subscribers", "add", "Yuri@example.com", "--topic", "launch")
    assert code == 0 and "Added Yuri@example.com (topics: Launch)" in out  # topic matched to its section name


def test_edits_are_atomic_and_keep_the_file_mode(commented: Path) -> None:
    os.chmod(commented, 0o600)
    before = commented.read_bytes()

    def crash(_tmp: Path) -> None:
        raise KeyboardInterrupt  # dies between writing the temp file and the rename

    original = config_edit.write_atomic
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config_edit, "write_atomic", lambda path, data: original(path, data, before_replace=crash))
        with pytest.raises(KeyboardInterrupt):
            subs.add(commented, "new@example.com")
    assert commented.read_bytes() == before
    assert [p.name for p in commented.parent.iterdir() if p.suffix == ".tmp"] == []
    assert run(commented, "subscribers", "add", "new@example.com")[0] == 0
    assert stat.S_IMODE(commented.stat().st_mode) == 0o600


def test_a_broken_config_is_never_edited(commented: Path) -> None:
    commented.write_text(COMMENTED.replace('timezone = "UTC"', 'timezone = "Mars/Olympus"'))
    before = commented.read_bytes()
    code, _out, err = run(commented, "subscribers", "add", "new@example.com")
    assert code == 1 and "unknown time zone" in err
    assert commented.read_bytes() == before


def test_import_reports_added_duplicates_and_rejected_rows(commented: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "\ufeffemail,name,topics\n"
        "grace@example.com,Grace Hopper,Launch;Commercial\n"
        'ken@example.com,"Thompson, Ken",Politics|Launch\n'
        "\n"
        "ADA@example.com,Dup of Ada,\n"
        "not-an-address,Broken,\n"
        "linus@example.com,Linus,Astrology\n"
        "grace@EXAMPLE.com,Grace again,\n"
        "a@example.com,A,Launch,extra\n"
        "zoe@example.com,Zoë 🚀,\n",
        encoding="utf-8",
    )
    code, out, err = run(commented, "subscribers", "import", str(csv_file))
    assert code == 0, err
    assert out.splitlines()[-1] == "4 added, 1 skipped as duplicate, 3 rejected as invalid"
    assert "line 8: skipped: grace@example.com is already subscribed" in out
    assert "line 6: rejected: not a valid email address 'not-an-address'" in out
    assert "line 7: rejected: unknown topic 'Astrology'" in out
    assert "line 9: rejected: expected at most 3 columns" in out
    loaded = {s.email: s for s in config_mod.load(commented).subscribers}
    assert "ADA@example.com" in loaded  # the local part differs: a different mailbox by RFC 5321
    assert loaded["grace@example.com"].topics == ("Launch", "Commercial")
    assert loaded["ken@example.com"].name == "Thompson, Ken"
    assert loaded["ken@example.com"].topics == ("Politics", "Launch")
    assert loaded["zoe@example.com"].name == "Zoë 🚀"
    assert "linus@example.com" not in loaded


def test_list_shows_unsubscribed_and_prune_removes_them(commented: Path) -> None:
    code, out, _ = run(commented, "subscribers", "list")
    assert code == 0 and "3 subscribers, 3 active, 0 unsubscribed" in out
    assert not (commented.parent / ".digest").exists()  # listing creates no state
    config = config_mod.load(commented)
    with Store(config.state_path) as store:
        store.suppress("Yuri@Example.com", datetime.now(UTC), "one-click")
    code, out, _ = run(commented, "subscribers", "list")
    yuri = next(line for line in out.splitlines() if line.startswith("yuri@"))
    assert yuri.split()[-1] == "unsubscribed" and "Launch, Commercial" in yuri
    assert "3 subscribers, 2 active, 1 unsubscribed" in out
    code, out, _ = run(commented, "subscribers", "prune")
    assert code == 0 and "Removed yuri@example.com (unsubscribed)" in out
    assert [s.email for s in config_mod.load(commented).subscribers] == ["ada@example.com", "valentina@example.org"]
    # re-adding keeps them suppressed until they ask to come back
    code, out, _ = run(commented, "subscribers", "add", "yuri@example.com")
    assert code == 0 and "unsubscribed earlier" in out
    code, out, _ = run(commented, "subscribers", "add", "yuri@example.com", "--resubscribe")
    assert code == 0 and "Lifted the unsubscribe" in out
    assert "3 active" in run(commented, "subscribers", "list")[1]


EMPTY_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Quiet Science</title><link>https://science.example/</link>
<description>Nothing today.</description></channel></rss>
"""


def test_topic_subscribers_get_only_their_sections_and_nothing_when_those_are_empty(
    make_config: MakeConfig, smtp_server: FaultySMTPServer, tmp_path: Path
) -> None:
    feeds = sample_feeds(tmp_path)
    (tmp_path / "feeds" / "science.xml").write_text(EMPTY_FEED, encoding="utf-8")
    feeds.append({"name": "Quiet Science", "url": "feeds/science.xml", "section": "Science"})
    people = [
        {"email": "all@example.com", "name": "All"},
        {"email": "military@example.com", "name": "Mil", "topics": ["Military"]},
        {"email": "military2@example.com", "name": "Mil 2", "topics": ["Military"]},
        {"email": "science@example.com", "name": "Sci", "topics": ["Science"]},
    ]
    config_path = make_config(smtp=smtp_server, feeds=feeds, subscribers=people)
    code, out, err = run(config_path, "send", "--now", NOW)
    assert code == 0, err
    got = smtp_server.by_recipient()
    assert sorted(got) == ["all@example.com", "military2@example.com", "military@example.com"]
    assert "delivered to 3 of 3 subscribers" in out  # the Science reader is not owed a mail
    config = config_mod.load(config_path)
    with Store(config.state_path) as store:
        edition = store.edition(date(2026, 11, 21))
        renders = store.renders(date(2026, 11, 21))
    assert edition is not None
    assert set(renders) == {(), ("Military",), ("Science",)}  # once per distinct topic set
    military = {s.lead.title for s in edition.stories if s.section == "Military"}
    others = {s.lead.title for s in edition.stories if s.section != "Military"}
    assert military and others
    text = " ".join(got["military@example.com"][0].message.get_body(("plain",)).get_content().split())
    everything = " ".join(got["all@example.com"][0].message.get_body(("plain",)).get_content().split())
    for title in military:
        assert " ".join(title.split()) in text
    for title in others:
        assert " ".join(title.split()) not in text
        assert " ".join(title.split()) in everything
