"""`digest bounces` from an IMAP mailbox (issue 15): a real Dovecot from Debian, started here.

Dovecot (dovecot-imapd, installed by .ci/run) runs with a private config on a free port of
127.0.0.1, plaintext login over loopback, the mailbox a Maildir the test fills. Processed
messages must get \\Seen plus $DigestProcessed, stay in the mailbox, and not be read again.
Needs root (Dovecot drops to a mail user); skipped without Dovecot or root unless CI is set.
"""

from __future__ import annotations

import mailbox
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import bounce_samples as samples
import pytest
from click.testing import CliRunner
from conftest import MakeConfig

from digest.cli import main

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
PASSWORD = "imap-test-password"  # a throwaway account of a test server
NOBODY = 65534


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Dovecot:
    def __init__(self, root: Path) -> None:
        self.root, self.port = root, _free_port()
        self.maildir = root / "mail" / "bounces"
        (root / "run").mkdir(parents=True)
        (root / "passwd").write_text(f"bounces:{{PLAIN}}{PASSWORD}::::::\n")
        self.conf = root / "dovecot.conf"
        self.conf.write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = digest-test-{self.port}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={NOBODY} gid={NOBODY} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def add(self, *messages: bytes) -> None:
        self.maildir.parent.mkdir(parents=True, exist_ok=True)
        box = mailbox.Maildir(self.maildir, create=True)
        for raw in messages:
            box.add(raw)
        for path in [self.root / "mail", *(self.root / "mail").rglob("*")]:
            os.chown(path, NOBODY, NOBODY)

    def start(self) -> None:
        (self.root / "state").mkdir(exist_ok=True)
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        log = (self.root / "dovecot.log").read_text() if (self.root / "dovecot.log").exists() else ""
        raise AssertionError(f"dovecot did not start: {self.proc.poll()} {log[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    why = ""
    if not os.path.exists(DOVECOT):
        why = "Dovecot is not installed (apt-get install dovecot-imapd)"
    elif os.geteuid() != 0:
        why = "the Dovecot test server needs root (it drops to a mail user)"
    if why and os.environ.get("CI"):
        pytest.fail(f"CI must run the IMAP test: {why}")
    if why:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="digest-dovecot-"))
    os.chmod(root, 0o755)
    server = Dovecot(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _flags(server: Dovecot) -> list[set[bytes]]:
    from imapclient import IMAPClient

    with IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=10) as client:
        client.login("bounces", PASSWORD)
        client.select_folder("INBOX", readonly=True)
        return [set(flags) for flags in client.get_flags(client.search(["ALL"])).values()]


@pytest.mark.slow
def test_imap_source_flags_processed_messages_and_never_deletes(
    dovecot: Dovecot, make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    dovecot.add(samples.dsn("news@orbitdaily.example", "ada@example.com"),
                samples.arf("fbl@example.net", "yuri@example.com"))
    dovecot.start()
    monkeypatch.setenv("BOUNCE_IMAP_PASSWORD", PASSWORD)
    config = make_config(bounces={"imap": f"imap://bounces@127.0.0.1:{dovecot.port}/INBOX",
                                  "imap_password_env": "BOUNCE_IMAP_PASSWORD"})
    run = CliRunner()
    first = run.invoke(main, ["--config", str(config), "bounces"])
    assert first.exit_code == 0, first.output
    assert first.output.startswith("2 messages read: 1 hard bounces, 0 soft, 1 complaints, 0 ignored;")
    flags = _flags(dovecot)
    assert len(flags) == 2 and all({b"\\Seen", b"$DigestProcessed"} <= f for f in flags), flags
    again = run.invoke(main, ["--config", str(config), "bounces"])
    assert again.output.startswith("0 messages read"), again.output
    dovecot.add(samples.dsn("news@orbitdaily.example", "valentina@example.org", status="4.2.2", action="delayed"))
    third = run.invoke(main, ["--config", str(config), "bounces"])
    assert third.output.startswith("1 messages read: 0 hard bounces, 1 soft"), third.output
    assert len(_flags(dovecot)) == 3
    listed = run.invoke(main, ["--config", str(config), "subscribers", "list"]).output
    assert "bounced" in listed and "complained" in listed


def test_imap_password_must_be_in_the_environment(make_config: MakeConfig) -> None:
    config = make_config(bounces={"imap": "imaps://bounces@127.0.0.1:1/INBOX"})
    result = CliRunner().invoke(main, ["--config", str(config), "bounces"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: [bounces] imap is set but $DIGEST_IMAP_PASSWORD is empty: export the IMAP password"
