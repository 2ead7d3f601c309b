"""Bounces and complaints (issue 15): VERP, `digest bounces`, suppression rules, safety.

Real components only: sends go to the aiosmtpd server or a Maildir, bounces are made-up
messages in the common formats (bounce_samples.py) read from real Maildir/mbox files and
stdin, and the state is a real SQLite file.
"""

from __future__ import annotations

import mailbox
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date
from email import message_from_bytes
from pathlib import Path

import bounce_samples as samples
import pytest
from click.testing import CliRunner, Result
from conftest import ROOT, MakeConfig
from hypothesis import given
from hypothesis import strategies as st
from smtp_fault import Fault, FaultySMTPServer

from digest import config as config_mod
from digest import mail, verp
from digest.cli import main
from digest.store import Store

NOW = "2026-11-21T07:00:00+00:00"
RETURN_PATH = "bounces@orbitdaily.example"
ADA, YURI, VALENTINA = "ada@example.com", "yuri@example.com", "valentina@example.org"


def cli(config: Path, *args: str, input: bytes | None = None) -> Result:
    result = CliRunner().invoke(main, ["--config", str(config), *args], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def sent_return_paths(config: Path) -> dict[str, str]:
    """Maildir copies: To address -> the Return-Path written into each."""
    out = {}
    for message in mailbox.Maildir(config.parent / "outbox", create=False):
        out[re.sub(r".*<|>.*", "", message["To"])] = message["Return-Path"].strip("<>")
    return out


def put(folder: Path, *messages: bytes) -> Path:
    box = mailbox.Maildir(folder, create=True)
    for raw in messages:
        box.add(raw)
    return folder


def statuses(config: Path) -> dict[str, str]:
    lines = cli(config, "subscribers", "list").output.splitlines()[1:-1]
    return {line.split()[0]: line for line in lines}


@pytest.fixture
def verp_config(make_config: MakeConfig) -> Path:
    config = make_config(bounces={"return_path": RETURN_PATH})
    assert cli(config, "send", "--now", NOW).exit_code == 0
    return config


# --------------------------------------------------------------------------- VERP tokens


@given(st.dates(date(2020, 1, 1), date(2150, 1, 1)), st.emails(), st.binary(min_size=16, max_size=32))
def test_token_names_its_edition_and_subscriber_and_fits_a_local_part(day: date, email: str, secret: bytes) -> None:
    key = verp.key(secret)
    token = verp.make_token(key, day, email)
    assert re.fullmatch(r"[a-z2-7]{23}", token)
    assert len(f"bounces+{token}") <= 64
    read = verp.read_token(key, token)
    assert read == verp.Token(day, verp.address_hash(email))
    assert verp.read_token(key, token.upper()) == read  # an MTA that upper-cases the local part
    assert verp.read_token(verp.key(secret + b"x"), token) is None


@given(st.binary(min_size=14, max_size=14), st.integers(0, 22))
def test_a_changed_character_is_a_forged_token(secret: bytes, position: int) -> None:
    key = verp.key(secret)
    token = verp.make_token(key, date(2026, 11, 21), ADA)
    changed = token[:position] + ("a" if token[position] != "a" else "b") + token[position + 1 :]
    assert verp.read_token(key, changed) is None


def test_the_verp_key_is_its_own_purpose_not_the_unsubscribe_one() -> None:
    secret = b"s" * 32
    assert verp.key(secret) != secret
    token = verp.make_token(verp.key(secret), date(2026, 11, 21), ADA)
    assert token not in mail.unsubscribe_token(secret, ADA)
    assert verp.read_token(verp.key(secret), mail.unsubscribe_token(secret, ADA)[:23]) is None


def test_smtp_envelope_sender_is_a_verp_return_path_per_subscriber(
    make_config: MakeConfig, smtp_server: FaultySMTPServer
) -> None:
    config = make_config(smtp=smtp_server, bounces={"return_path": RETURN_PATH})
    assert cli(config, "send", "--now", NOW).exit_code == 0
    senders = {r.rcpt_tos[0]: r.mail_from for r in smtp_server.received}
    assert set(senders) == {ADA, YURI, VALENTINA}
    with Store(config_mod.load(config).state_path) as store:
        key = verp.key(store.secret())
    for email, sender in senders.items():
        token = verp.token_in(RETURN_PATH, sender)
        assert token is not None, sender
        assert verp.read_token(key, token) == verp.Token(date(2026, 11, 21), verp.address_hash(email))


def test_without_return_path_the_envelope_sender_stays_the_newsletter_sender(
    make_config: MakeConfig, smtp_server: FaultySMTPServer
) -> None:
    config = make_config(smtp=smtp_server)
    assert cli(config, "send", "--now", NOW).exit_code == 0
    assert {r.mail_from for r in smtp_server.received} == {"news@orbitdaily.example"}


def test_maildir_copies_carry_the_return_path_header(verp_config: Path) -> None:
    paths = sent_return_paths(verp_config)
    assert set(paths) == {ADA, YURI, VALENTINA}
    assert all(verp.token_in(RETURN_PATH, p) for p in paths.values())
    assert len(set(paths.values())) == 3


# --------------------------------------------------------------------------- digest bounces


def test_bounces_suppress_hard_soft_after_three_and_complaints(verp_config: Path, tmp_path: Path) -> None:
    paths = sent_return_paths(verp_config)
    box = put(
        tmp_path / "bounces",
        samples.dsn(paths[ADA], ADA),  # hard, via the VERP token
        samples.arf("fbl@orbitdaily.example", None, original_return_path=paths[VALENTINA]),  # redacted ARF
        samples.dsn(paths[YURI], YURI, status="4.2.2", action="delayed"),
        samples.dsn(paths[YURI], YURI, status="4.2.2", action="delayed"),
        samples.vacation(paths[YURI], YURI),
    )
    result = cli(verp_config, "bounces", "--maildir", str(box), "--now", NOW)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "5 messages read: 1 hard bounces, 2 soft, 1 complaints, 1 ignored (1 auto-reply); 2 addresses suppressed"
    )
    listed = statuses(verp_config)
    assert "bounced (5.1.1 smtp; 550 5.1.1" in listed[ADA]
    assert "2026-11-21" in listed[ADA]
    assert "complained (spam complaint (abuse)" in listed[VALENTINA]
    assert listed[YURI].endswith("active")
    footer = cli(verp_config, "subscribers", "list").output.splitlines()[-1]
    assert footer == "3 subscribers, 1 active, 2 unsubscribed (1 bounced, 1 complained)"
    # the third temporary failure within 14 days suppresses
    put(box, samples.dsn(paths[YURI], YURI, status="4.4.7", action="failed"))
    result = cli(verp_config, "bounces", "--maildir", str(box), "--now", "2026-11-22T07:00:00+00:00")
    assert "1 soft" in result.output and "5 already processed" in result.output
    assert "1 addresses suppressed" in result.output
    assert "bounced (3 temporary failures within 14 days" in statuses(verp_config)[YURI]
    status = cli(verp_config, "status").output
    assert f"bounced {ADA}: 5.1.1" in status and f"complained {VALENTINA}: spam complaint" in status
    assert "(2026-11-21)" in status


def test_temporary_failures_count_by_their_date_within_14_days(verp_config: Path, tmp_path: Path) -> None:
    paths = sent_return_paths(verp_config)

    def soft(email: str, day: int) -> bytes:
        date = f"{day:02d} Nov 2026 09:00:00 +0000"
        return samples.dsn(paths[email], email, status="4.2.2", action="delayed", date=date)

    spread = put(tmp_path / "spread", soft(ADA, 1), soft(ADA, 10), soft(ADA, 20), soft(ADA, 30))  # an old Maildir
    out = cli(verp_config, "bounces", "--maildir", str(spread), "--now", "2026-12-01T00:00:00+00:00").output
    assert out.startswith("4 messages read: 0 hard bounces, 4 soft") and "0 addresses suppressed" in out
    late = put(tmp_path / "late", soft(YURI, 25), soft(YURI, 12), soft(YURI, 14))  # out of order, within 13 days
    out = cli(verp_config, "bounces", "--maildir", str(late), "--now", "2026-12-01T00:00:00+00:00").output
    assert "1 addresses suppressed" in out
    assert "bounced (3 temporary failures within 14 days" in statuses(verp_config)[YURI]
    assert statuses(verp_config)[ADA].endswith("active")


def test_suppressed_addresses_get_no_more_mail_and_prune_and_resubscribe(verp_config: Path, tmp_path: Path) -> None:
    paths = sent_return_paths(verp_config)
    box = put(tmp_path / "b", samples.dsn(paths[ADA], ADA), samples.arf("fbl@x.example", YURI))
    assert "2 addresses suppressed" in cli(verp_config, "bounces", "--maildir", str(box)).output
    outbox = verp_config.parent / "outbox"
    before = len(list(mailbox.Maildir(outbox, create=False)))
    assert cli(verp_config, "send", "--now", "2026-11-22T07:00:00+00:00").exit_code == 0
    new = list(mailbox.Maildir(outbox, create=False))[before:]
    assert sorted(m["To"] for m in new) == ["Valentina Tereshkova <valentina@example.org>"] or all(
        VALENTINA in m["To"] for m in new
    )
    # resubscribe lifts the bounce (the reader fixed their mailbox)
    out = cli(verp_config, "subscribers", "add", ADA, "--resubscribe").output
    assert "Lifted" in out
    assert statuses(verp_config)[ADA].endswith("active")
    assert "complained" in statuses(verp_config)[YURI]
    out = cli(verp_config, "subscribers", "prune").output
    assert f"Removed {YURI} (complained" in out
    assert YURI not in verp_config.read_text()
    assert ADA in verp_config.read_text()


def test_strangers_messages_suppress_nobody_and_are_counted(verp_config: Path, tmp_path: Path) -> None:
    paths = sent_return_paths(verp_config)
    forged = paths[ADA][:-len("@orbitdaily.example") - 3] + "aaa@orbitdaily.example"
    other_edition = verp.return_path(RETURN_PATH, verp.key(b"another secret"), date(2026, 11, 21), ADA)
    box = put(
        tmp_path / "b",
        samples.dsn(forged, ADA),  # token altered
        samples.dsn(other_edition, ADA),  # token signed by someone else
        samples.dsn(paths[YURI], ADA),  # a genuine token, but the report names another subscriber
        samples.dsn("postmaster@orbitdaily.example", "stranger@example.net"),  # not a subscriber
        samples.arf("fbl@x.example", "stranger@example.net"),
        b"\x00\xff not an email \xfe" * 10,
        b"Subject: hello\n\njust a message\n",
        samples.dsn(paths[ADA], ADA) + b"x" * (1 << 20),  # over the size cap
        samples.arf("fbl@x.example", VALENTINA, feedback_type="not-spam"),
    )
    result = cli(verp_config, "bounces", "--maildir", str(box))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("9 messages read: 0 hard bounces, 0 soft, 0 complaints, 9 ignored (")
    for why in ("2 forged token", "1 mismatched token", "2 not a subscriber", "1 too large", "2 not a bounce",
                "1 feedback report of type 'not-spam'"):
        assert why in result.output, why
    assert result.output.strip().endswith("0 addresses suppressed")
    assert all(line.endswith("active") for line in statuses(verp_config).values())


def test_without_verp_the_report_names_the_subscriber(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config()
    assert cli(config, "send", "--now", NOW).exit_code == 0
    box = put(
        tmp_path / "b",
        samples.exim_text("news@orbitdaily.example", ADA),
        samples.qmail_text("news@orbitdaily.example", YURI),
        samples.dsn("news@orbitdaily.example", "Valentina@example.org"),  # other case: another mailbox
    )
    out = cli(config, "bounces", "--maildir", str(box)).output
    assert out.startswith("3 messages read: 2 hard bounces, 0 soft, 0 complaints, 1 ignored (1 not a subscriber)")
    listed = statuses(config)
    assert "bounced" in listed[ADA] and "bounced" in listed[YURI] and listed[VALENTINA].endswith("active")


def test_replay_counts_once_from_any_source(verp_config: Path, tmp_path: Path) -> None:
    paths = sent_return_paths(verp_config)
    soft = samples.dsn(paths[ADA], ADA, status="4.2.2", action="delayed")
    mbox_path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(mbox_path)
    box.add(soft)
    box.add(soft)  # the same message twice in one file
    box.flush()
    box.close()
    first = cli(verp_config, "bounces", "--mbox", str(mbox_path)).output
    assert first.startswith("2 messages read: 0 hard bounces, 1 soft") and "1 already processed" in first
    again = cli(verp_config, "bounces", "--stdin", input=soft).output
    assert again.startswith("1 messages read: 0 hard bounces, 0 soft") and "1 already processed" in again
    for _ in range(3):
        cli(verp_config, "bounces", "--mbox", str(mbox_path))
    assert statuses(verp_config)[ADA].endswith("active")  # still one temporary failure, not five
    with sqlite3.connect(config_mod.load(verp_config).state_path) as db:
        assert db.execute("SELECT COUNT(*) FROM bounce_soft").fetchone() == (1,)


def test_stdin_reads_one_message(verp_config: Path) -> None:
    paths = sent_return_paths(verp_config)
    result = cli(verp_config, "bounces", "--stdin", input=samples.dsn(paths[YURI], YURI))
    assert result.output.startswith("1 messages read: 1 hard bounces") and "1 addresses suppressed" in result.output


def test_configured_source_and_errors(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(bounces={"return_path": RETURN_PATH, "maildir": "bounce-box"})
    put(tmp_path / "bounce-box", samples.arf("fbl@x.example", ADA))
    assert cli(config, "send", "--now", NOW).exit_code == 0
    assert "1 complaints" in cli(config, "bounces").output
    bare = make_config()
    result = cli(bare, "bounces")
    assert result.exit_code == 1 and result.output.startswith("Error: no bounce source")
    result = cli(bare, "bounces", "--maildir", str(tmp_path / "nowhere"))
    assert result.exit_code == 1 and "not a Maildir" in result.output
    assert cli(bare, "bounces", "--stdin", "--mbox", "x").exit_code == 2


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"return_path": "bounces+x@example.org"}, "bounces.return_path: 'bounces+x@example.org': no '+'"),
        ({"return_path": "not an address"}, "bounces.return_path: not a valid email address"),
        ({"imap": "pop3://user@host/INBOX"}, "bounces.imap: expected"),
        ({"imap_password_env": "1X"}, "bounces.imap_password_env: expected an environment variable name"),
        ({"unknown": 1}, "bounces.unknown: unknown key"),
    ],
)
def test_bounces_config_is_validated_with_key_paths(make_config: MakeConfig, table: dict[str, object], problem: str) -> None:
    config = make_config(bounces=table)
    with pytest.raises(config_mod.ConfigError, match=re.escape(problem)):
        config_mod.load(config)


@given(st.binary(max_size=3000) | st.builds(
    lambda raw, cut, junk: raw[:cut] + junk + raw[cut:],
    st.sampled_from([samples.dsn("b@x.example", ADA), samples.arf("f@x.example", YURI)]),
    st.integers(0, 2000), st.binary(max_size=200),
))
def test_any_bytes_classify_without_raising_and_suppress_no_stranger(raw: bytes) -> None:
    from digest import bounces

    bounce = bounces.classify(raw, RETURN_PATH)
    assert bounce.kind in {"hard", "soft", "complaint", "ignored"} and bounce.key
    found = bounces.resolve(bounce, verp.key(b"k"), {config_mod.address_key(VALENTINA): VALENTINA}, {})
    assert found.email in (None, VALENTINA)


# --------------------------------------------------------------------------- send-time 5xx


def test_refused_with_5xx_in_two_editions_in_a_row_is_suppressed(
    make_config: MakeConfig, smtp_server: FaultySMTPServer
) -> None:
    config = make_config(smtp=smtp_server, schedule={"send_if_empty": True})  # an edition every day
    smtp_server.add_fault(Fault("RCPT", 550, "5.1.1 No such user here", rcpt=YURI, times=-1))
    assert cli(config, "send", "--now", NOW).exit_code == 0
    assert statuses(config)[YURI].endswith("active")  # once may be a relay's mistake
    assert cli(config, "send", "--now", "2026-11-22T07:00:00+00:00").exit_code == 0
    assert "bounced (refused with 550 in two editions in a row (2026-11-21, 2026-11-22)" in statuses(config)[YURI]
    before = len(smtp_server.received)
    assert cli(config, "send", "--now", "2026-11-23T07:00:00+00:00").exit_code == 0
    assert sorted(r.rcpt_tos[0] for r in smtp_server.received[before:]) == [ADA, VALENTINA]


# --------------------------------------------------------------------------- crash and concurrency


def _subprocess(config: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(config), "bounces", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _many_soft(verp_config: Path, folder: Path, count: int) -> Path:
    paths = sent_return_paths(verp_config)
    emails = [ADA, YURI, VALENTINA]
    return put(folder, *(samples.dsn(paths[emails[i % 3]], emails[i % 3], status="4.2.2", action="delayed")
                         for i in range(count)))


def _recorded(config: Path) -> int:
    try:
        with sqlite3.connect(config_mod.load(config).state_path, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM bounce_messages").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_sigkill_mid_batch_then_again_loses_nothing_and_counts_nothing_twice(
    verp_config: Path, tmp_path: Path
) -> None:
    total = 400
    box = _many_soft(verp_config, tmp_path / "b", total)
    proc = _subprocess(verp_config, "--maildir", str(box))
    try:
        deadline = time.monotonic() + 60
        while _recorded(verp_config) < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    done = _recorded(verp_config)
    assert 20 <= done < total
    result = cli(verp_config, "bounces", "--maildir", str(box), "--now", NOW)
    assert result.output.startswith(f"{total} messages read: 0 hard bounces, {total - done} soft")
    assert f"; {done} already processed" in result.output
    with sqlite3.connect(config_mod.load(verp_config).state_path) as db:
        assert db.execute("SELECT COUNT(*) FROM bounce_messages").fetchone() == (total,)
        assert db.execute("SELECT COUNT(*) FROM bounce_soft").fetchone() == (total,)
        assert db.execute("SELECT COUNT(*) FROM bounce_suppressions").fetchone() == (3,)


@pytest.mark.slow
def test_concurrent_runs_process_each_message_once(verp_config: Path, tmp_path: Path) -> None:
    total = 150
    box = _many_soft(verp_config, tmp_path / "b", total)
    procs = [_subprocess(verp_config, "--maildir", str(box)) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    counted = 0
    for out, _err in outputs:
        match = re.match(rb"(\d+) messages read: 0 hard bounces, (\d+) soft", out)
        assert match and int(match[1]) == total, out
        counted += int(match[2])
    assert counted == total
    with sqlite3.connect(config_mod.load(verp_config).state_path) as db:
        assert db.execute("SELECT COUNT(*) FROM bounce_soft").fetchone() == (total,)


# --------------------------------------------------------------------------- flufl.bounce's own samples


FLUFL_SAMPLES = os.environ.get("FLUFL_BOUNCE_SAMPLES", "")


@pytest.fixture
def flufl_samples() -> list[Path]:
    """flufl.bounce's own test messages: its sdist ships them (.ci/run unpacks it), its wheel does not."""
    if not FLUFL_SAMPLES:
        if os.environ.get("CI"):
            pytest.fail("FLUFL_BOUNCE_SAMPLES is not set: .ci/run unpacks flufl.bounce's sdist for its tests/data")
        pytest.skip("set FLUFL_BOUNCE_SAMPLES to flufl.bounce's tests/data folder (its wheel does not ship them)")
    files = sorted(Path(FLUFL_SAMPLES).glob("*.txt"))
    assert len(files) >= 90, FLUFL_SAMPLES
    return files


def test_flufl_bounce_samples_suppress_nobody_who_is_not_a_subscriber(
    make_config: MakeConfig, tmp_path: Path, flufl_samples: list[Path]
) -> None:
    config = make_config()
    box = put(tmp_path / "flufl", *(f.read_bytes() for f in flufl_samples))
    result = cli(config, "bounces", "--maildir", str(box))
    assert result.exit_code == 0 and result.output.startswith(f"{len(flufl_samples)} messages read")
    recognised = re.search(r"(\d+) not a subscriber", result.output)
    assert recognised and int(recognised[1]) >= 0.85 * len(flufl_samples), result.output
    assert result.output.strip().endswith("0 addresses suppressed")


def test_flufl_bounce_samples_of_every_mta_suppress_the_bounced_subscribers(
    make_config: MakeConfig, tmp_path: Path, flufl_samples: list[Path]
) -> None:
    """Postfix, Exim, qmail, Sendmail, Microsoft, Yahoo, ... : each format's hard bounces suppress their address."""
    from digest.bounces import classify

    verdicts = {f: classify(f.read_bytes()) for f in flufl_samples}
    hard = {f: b for f, b in verdicts.items() if b.kind == "hard" and b.addresses}
    assert len(hard) + sum(b.kind == "soft" for b in verdicts.values()) >= 0.85 * len(flufl_samples)
    families = {f.stem.rsplit("_", 1)[0] for f in hard}
    assert {"postfix", "exim", "qmail", "sendmail", "microsoft", "yahoo", "dsn"} <= families, families
    def valid(address: str) -> bool:
        try:
            config_mod.check_email(address)
        except ValueError:
            return False
        return True

    named = sorted({a.lower() for b in verdicts.values() for a in b.addresses if valid(a)})
    config = make_config(subscribers=[{"email": a} for a in named])
    box = put(tmp_path / "flufl", *(f.read_bytes() for f in flufl_samples))
    result = cli(config, "bounces", "--maildir", str(box))
    assert result.exit_code == 0, result.output
    bounced = {email for email, line in statuses(config).items() if " bounced" in line}
    # only addresses a hard bounce names, and one for (nearly) every address-naming hard bounce
    assert bounced <= {a.lower() for b in hard.values() for a in b.addresses}, result.output
    firsts = {a.lower() for b in hard.values() for a in b.addresses[:1] if valid(a)}
    assert len(bounced) >= 0.9 * len(firsts), (sorted(bounced), sorted(firsts))
    again = cli(config, "bounces", "--maildir", str(box))
    assert f"{len(flufl_samples)} already processed" in again.output or "already processed" in again.output, again.output
    assert again.output.strip().endswith("0 addresses suppressed")


def test_the_flufl_samples_helper_can_parse_a_message() -> None:
    assert message_from_bytes(samples.dsn("a@b.example", "c@d.example"))["Subject"]


# --------------------------------------------------------------------------- digest run


def test_the_daemon_reads_the_configured_source_at_every_poll_and_before_sending(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    from datetime import datetime

    from digest.schedule import Daemon

    config = make_config(bounces={"maildir": "bounce-box"})
    put(tmp_path / "bounce-box", samples.arf("fbl@x.example", ADA))
    assert Daemon(config).tick(datetime.fromisoformat("2026-11-21T03:00:00+00:00")) == "polled"
    assert "complained" in statuses(config)[ADA]
    put(tmp_path / "bounce-box", samples.dsn("news@orbitdaily.example", YURI))
    assert Daemon(config).tick(datetime.fromisoformat("2026-11-21T07:00:00+00:00")) == "sent"
    assert "bounced" in statuses(config)[YURI]
    sent_to = [m["To"] for m in mailbox.Maildir(tmp_path / "outbox", create=False)]
    assert len(sent_to) == 1 and VALENTINA in sent_to[0]


def test_a_broken_source_never_stops_the_daemon(make_config: MakeConfig) -> None:
    from datetime import datetime

    from digest.schedule import Daemon

    config = make_config(bounces={"maildir": "no-such-box"})
    assert Daemon(config).tick(datetime.fromisoformat("2026-11-21T03:00:00+00:00")) == "polled"
