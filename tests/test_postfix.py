"""A real MTA end to end (issue 15): Postfix from Debian on 127.0.0.1:2525 (tests/postfix/setup.sh).

digest sends an edition over SMTP to one real mailbox and two unknown users of
dest.example; Postfix accepts all three (250), then bounces the unknown ones with RFC 3464
DSNs to each message's VERP return path, bounces+TOKEN@bounce.example, delivered into a
Maildir. `digest bounces --maildir` on that Maildir must suppress exactly those two, and
the next edition must go to the real mailbox only. Earlier runs' bounces in the same
Maildir carry tokens signed with other keys: they must change nothing.

Skipped on a developer machine without that Postfix; with CI set, its absence fails.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import MakeConfig

from digest.cli import main

PORT = int(os.environ.get("DIGEST_POSTFIX_PORT", "2525"))
SPOOL = Path("/var/spool/digest-postfix-test")
BOUNCES = SPOOL / "bounce.example" / "bounces"
READER = "reader@dest.example"


def _postfix_ready() -> str:
    """Why the Postfix of setup.sh cannot be used here, or "" when it can."""
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=2) as conn:
            if not conn.recv(512).startswith(b"220"):
                return f"127.0.0.1:{PORT} is not an SMTP server"
    except OSError as exc:
        return f"no Postfix on 127.0.0.1:{PORT} ({exc}); run tests/postfix/setup.sh as root"
    if not os.access(SPOOL, os.R_OK | os.X_OK):
        return f"cannot read {SPOOL} (run the test as root, or as the user of setup.sh)"
    return ""


@pytest.fixture
def postfix() -> None:
    why = _postfix_ready()
    if why and os.environ.get("CI"):
        pytest.fail(f"CI must run the Postfix end-to-end test: {why}")
    if why:
        pytest.skip(why)


def cli(config: Path, *args: str) -> Result:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return result


def _ours(names: list[str]) -> list[Path]:
    """Files of the bounce Maildir that name one of these addresses."""
    found = []
    for sub in ("new", "cur"):
        for path in (BOUNCES / sub).glob("*") if (BOUNCES / sub).is_dir() else ():
            data = path.read_bytes()
            if any(n.encode() in data for n in names):
                found.append(path)
    return found


@pytest.mark.slow
@pytest.mark.usefixtures("postfix")
def test_postfix_bounces_unknown_users_and_digest_suppresses_exactly_them(make_config: MakeConfig) -> None:
    run = uuid.uuid4().hex[:10]
    gone = [f"gone-{run}-a@dest.example", f"gone-{run}-b@dest.example"]
    config = make_config(
        subscribers=[{"email": READER, "name": "Reader"}, *({"email": g} for g in gone)],
        delivery={"transport": "smtp"},
        bounces={"return_path": "bounces@bounce.example"},
        schedule={"send_if_empty": True},
    )
    with config.open("a", encoding="utf-8") as handle:  # (make_config's smtp= takes an aiosmtpd server)
        handle.write(f'\n[smtp]\nhost = "127.0.0.1"\nport = {PORT}\nsecurity = "none"\ntimeout = 30\n')
    try:
        out = cli(config, "send", "--now", "2026-11-21T07:00:00+00:00").output
        assert "delivered to 3 of 3 subscribers" in out  # Postfix said 250 to all three
        deadline = time.monotonic() + 60
        while len(_ours(gone)) < 2 and time.monotonic() < deadline:
            time.sleep(0.25)
        assert len(_ours(gone)) == 2, "Postfix sent no DSN for the unknown users within 60 s (see /var/log/postfix.log)"
        out = cli(config, "bounces", "--maildir", str(BOUNCES), "--now", "2026-11-21T08:00:00+00:00").output
        print(out)  # for a human running -s
        assert ": 2 hard bounces, 0 soft, 0 complaints," in out, out
        assert out.strip().endswith("; 2 addresses suppressed"), out
        listed = cli(config, "subscribers", "list").output
        for address in gone:
            line = next(line for line in listed.splitlines() if line.startswith(address))
            assert "bounced (5.1.1" in line and "unknown user" in line, line
        assert next(line for line in listed.splitlines() if line.startswith(READER)).endswith("active")
        again = cli(config, "bounces", "--maildir", str(BOUNCES)).output  # idempotent on the real Maildir
        assert ": 0 hard bounces, 0 soft, 0 complaints, 0 ignored;" in again and "0 addresses suppressed" in again
        out = cli(config, "send", "--now", "2026-11-22T07:00:00+00:00").output
        assert "delivered to 1 of 1 subscribers" in out, out
    finally:
        for path in _ours(gone):  # the test's own files only; digest itself never deletes
            path.unlink(missing_ok=True)
