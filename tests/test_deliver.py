"""Delivery against a real aiosmtpd server with injected faults (issue 4).

Every test goes through `digest send`, so what is checked is what a user gets: the
messages the server accepted, the delivery records, the summary line and `digest status`.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import MakeConfig, sample_feeds, toml_value
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_fault import Fault, FaultySMTPServer, free_port

from digest import config as config_mod
from digest import deliver, mail
from digest.cli import main
from digest.store import Store

NOW = "2026-11-21T07:00:00+00:00"
DAY = date(2026, 11, 21)


def subscribers(n: int) -> list[dict[str, Any]]:
    return [{"email": f"reader{i:02d}@example.com", "name": f"Reader {i}"} for i in range(n)]


def run(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def records(config: Path, day: date = DAY) -> dict[str, tuple[str, int, str]]:
    """email -> (status, code, text) as stored."""
    with Store(config_mod.load(config).state_path) as store:
        rows = store.db.execute("SELECT email, status, code, text FROM deliveries WHERE day=?", (day.isoformat(),))
        return {e: (s, c or 0, t or "") for e, s, c, t in rows}


def smtp_keys(config: Path, **keys: Any) -> Path:
    """Adds keys to the [smtp] table that make_config wrote (its `smtp` argument is the server)."""
    lines = "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())
    config.write_text(config.read_text(encoding="utf-8").replace("[smtp]\n", "[smtp]\n" + lines, 1), encoding="utf-8")
    return config


def accepted_once(server: FaultySMTPServer) -> set[str]:
    got = server.by_recipient()
    assert all(len(items) == 1 for items in got.values()), {k: len(v) for k, v in got.items() if len(v) > 1}
    return set(got)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-run retry pauses shortened: the policy is the same, the test just waits less."""
    monkeypatch.setattr(deliver, "IN_RUN_DELAYS", (0.05, 0.1))


def test_451_on_rcpt_then_success_is_delivered_once_in_the_same_run(
    make_config: MakeConfig, smtp_server: FaultySMTPServer
) -> None:
    smtp_server.add_fault(Fault("RCPT", 451, "Greylisted, come back later", rcpt="ada@example.com"))
    config = make_config(smtp=smtp_server)
    code, out, err = run(config, "send", "--now", NOW)
    assert code == 0, err
    assert "delivered to 3 of 3 subscribers" in out
    assert accepted_once(smtp_server) == {"ada@example.com", "yuri@example.com", "valentina@example.org"}
    with Store(config_mod.load(config).state_path) as store:
        assert store.deliveries(DAY)["ada@example.com"][:2] == ("sent", 2)


def test_550_for_one_address_is_recorded_and_the_others_delivered(
    make_config: MakeConfig, smtp_server: FaultySMTPServer
) -> None:
    smtp_server.add_fault(Fault("RCPT", 550, "5.1.1 No such user here", rcpt="yuri@example.com", times=-1))
    config = make_config(smtp=smtp_server)
    code, out, err = run(config, "send", "--now", NOW)
    assert code == 0, err
    assert "delivered to 2 of 3 subscribers" in out and "1 failed" in out
    assert accepted_once(smtp_server) == {"ada@example.com", "valentina@example.org"}
    assert records(config)["yuri@example.com"] == ("failed", 550, "5.1.1 No such user here")
    code, out, _ = run(config, "status")
    assert "failed yuri@example.com: 550 5.1.1 No such user here" in out
    assert "2 sent" in out and "1 failed" in out
    run(config, "send", "--now", "2026-11-21T09:00:00+00:00")  # a permanent failure is not retried
    assert len(smtp_server.received) == 2


@pytest.mark.parametrize("connections", [1, 3])
@pytest.mark.parametrize(
    "fault",
    [
        Fault("MAIL", 421, "4.3.2 Service shutting down", after=4),
        Fault("RCPT", 421, "4.7.0 Too many messages, closing", after=6),
        Fault("DATA", drop=True, after=3),
        Fault("MAIL", drop=True, after=5, times=2),
    ],
    ids=["421-mail", "421-rcpt", "drop-after-data", "drop-at-mail-twice"],
)
def test_421_or_dropped_connection_mid_batch_reconnects_and_delivers_everyone_once(
    make_config: MakeConfig, smtp_server: FaultySMTPServer, fault: Fault, connections: int
) -> None:
    smtp_server.add_fault(Fault(**vars(fault)))  # a fresh copy: faults count down
    config = smtp_keys(make_config(smtp=smtp_server, subscribers=subscribers(12)), connections=connections)
    before = smtp_server.connections
    code, out, err = run(config, "send", "--now", NOW)
    assert code == 0, err
    assert "delivered to 12 of 12 subscribers" in out
    assert accepted_once(smtp_server) == {f"reader{i:02d}@example.com" for i in range(12)}
    assert smtp_server.connections - before > connections  # it reconnected
    assert {s for s, _c, _t in records(config).values()} == {"sent"}


def test_4xx_after_data_is_retried_in_the_run(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> None:
    smtp_server.add_fault(Fault("DATA", 452, "4.3.1 Insufficient system storage", rcpt="valentina@example.org"))
    config = make_config(smtp=smtp_server)
    code, out, _ = run(config, "send", "--now", NOW)
    assert code == 0 and "delivered to 3 of 3" in out
    assert len(accepted_once(smtp_server)) == 3


def test_lasting_4xx_is_left_retrying_with_backoff_then_sent_by_a_later_send(
    make_config: MakeConfig, smtp_server: FaultySMTPServer
) -> None:
    fault = Fault("DATA", 451, "4.7.1 Please slow down", rcpt="ada@example.com", times=-1)
    smtp_server.add_fault(fault)
    config = make_config(smtp=smtp_server)
    code, out, _ = run(config, "send", "--now", NOW)
    assert code == 0
    assert "delivered to 2 of 3 subscribers, 1 to retry" in out
    assert records(config)["ada@example.com"] == ("retrying", 451, "4.7.1 Please slow down")
    code, out, _ = run(config, "status")
    assert "retrying ada@example.com: 451 4.7.1 Please slow down (next attempt 2026-11-21 07:" in out
    fault.times = 0  # the relay recovers
    run(config, "send", "--now", "2026-11-21T07:00:30+00:00")  # backoff not over: nothing sent
    assert len(smtp_server.received) == 2
    code, out, _ = run(config, "send", "--now", "2026-11-21T07:30:00+00:00")
    assert "delivered to 3 of 3" in out
    assert len(accepted_once(smtp_server)) == 3


def test_backoff_doubles_and_is_capped() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 11, 21, 7, tzinfo=UTC)
    gaps = [deliver.next_attempt(now, n) - now for n in (1, 2, 3, 8, 30)]
    assert gaps == [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4), timedelta(hours=1),
                    timedelta(hours=1)]


def test_unreachable_relay_keeps_everyone_owed_and_a_later_send_delivers(
    make_config: MakeConfig, smtp_server: FaultySMTPServer, tmp_path: Path
) -> None:
    nobody = SimpleNamespace(port=free_port())  # nothing listens there
    down = smtp_keys(make_config(smtp=nobody, subscribers=subscribers(30)), connections=4)
    code, out, err = run(down, "send", "--now", NOW)
    assert code == 0, err
    assert "delivered to 0 of 30 subscribers, 30 to retry" in out
    assert {s for s, _c, _t in records(down).values()} == {"retrying"}
    assert any("unreachable" in t for _s, _c, t in records(down).values())
    up = make_config(smtp=smtp_server, subscribers=subscribers(30))
    code, out, _ = run(up, "send", "--now", "2026-11-21T08:00:00+00:00")
    assert "delivered to 30 of 30" in out
    assert len(accepted_once(smtp_server)) == 30


def test_retries_end_with_the_next_edition(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> None:
    smtp_server.add_fault(Fault("RCPT", 451, "4.2.0 Mailbox busy", rcpt="ada@example.com", times=-1))
    config = make_config(smtp=smtp_server, schedule={"send_if_empty": True})
    run(config, "send", "--now", NOW)
    assert records(config)["ada@example.com"][0] == "retrying"
    run(config, "send", "--now", "2026-11-22T07:00:00+00:00")
    status, _code, text = records(config)["ada@example.com"]
    assert status == "failed" and text.startswith("gave up: a newer edition is out; last reply: 451 4.2.0 Mailbox busy")


def test_max_retry_hours_limits_the_lifetime(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> None:
    smtp_server.add_fault(Fault("RCPT", 451, "4.2.0 Mailbox busy", rcpt="ada@example.com", times=-1))
    config = smtp_keys(make_config(smtp=smtp_server), max_retry_hours=1)
    run(config, "send", "--now", NOW)
    sent_before = len(smtp_server.received)
    code, out, _ = run(config, "send", "--now", "2026-11-21T08:30:00+00:00")
    assert code == 0 and "1 failed" in out
    assert records(config)["ada@example.com"][0] == "failed"
    assert len(smtp_server.received) == sent_before
    assert "failed ada@example.com: gave up after 1 h of retries" in run(config, "status")[1]


def test_connections_are_reused_and_used_in_parallel(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> None:
    config = smtp_keys(make_config(smtp=smtp_server, subscribers=subscribers(40)), connections=4)
    before = smtp_server.connections  # the controller's own readiness probe
    _code, out, _ = run(config, "send", "--now", NOW)
    assert "delivered to 40 of 40" in out
    assert len(accepted_once(smtp_server)) == 40
    assert smtp_server.connections - before == 4


def test_rate_limit_is_shared_across_connections(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> None:
    config = smtp_keys(make_config(smtp=smtp_server, subscribers=subscribers(12)), connections=4, rate_per_second=20)
    started = time.monotonic()
    _code, out, _ = run(config, "send", "--now", NOW)
    assert "delivered to 12 of 12" in out
    assert time.monotonic() - started >= 11 / 20  # 12 evenly spaced starts at 20/s, whatever the connections


def test_a_second_send_while_one_holds_the_lock_says_so(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> None:
    config = make_config(smtp=smtp_server)
    with Store(config_mod.load(config).state_path) as store, store.lock("send", "sending"):
        code, _out, err = run(config, "send", "--now", NOW)
    assert code == 1
    assert err.startswith("Error: another digest process is already sending with ")
    assert len(err.strip().splitlines()) == 1
    assert smtp_server.received == []


@pytest.mark.parametrize("base_url", ["https://news.example.com", ""])
def test_list_unsubscribe_headers_on_the_received_message(
    make_config: MakeConfig, smtp_server: FaultySMTPServer, base_url: str
) -> None:
    config = make_config(smtp=smtp_server, newsletter={"base_url": base_url})
    assert run(config, "send", "--now", NOW)[0] == 0
    msg = smtp_server.by_recipient()["ada@example.com"][0].message
    links = [link.strip().strip("<>") for link in str(msg["List-Unsubscribe"]).split(",")]
    assert "mailto:news@orbitdaily.example?subject=unsubscribe%20ada%40example.com" in links
    if base_url:
        with Store(config_mod.load(config).state_path) as store:
            token = mail.unsubscribe_token(store.secret(), "ada@example.com")
        assert f"https://news.example.com/unsubscribe?email=ada%40example.com&token={token}" in links
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    else:
        assert len(links) == 1 and msg["List-Unsubscribe-Post"] is None


FAULTS = st.builds(
    Fault,
    command=st.sampled_from(["MAIL", "RCPT", "DATA"]),
    code=st.sampled_from([421, 450, 451, 452, 550, 552, 554]),
    rcpt=st.none() | st.sampled_from([f"reader{i:02d}@example.com" for i in range(8)]),
    times=st.integers(1, 3),
    drop=st.booleans(),
    after=st.integers(0, 10),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(faults=st.lists(FAULTS, max_size=4), connections=st.integers(1, 3))
def test_sent_records_match_what_the_server_accepted(
    tmp_path_factory: pytest.TempPathFactory, faults: list[Fault], connections: int
) -> None:
    from conftest import write_config

    folder = tmp_path_factory.mktemp("prop")
    server = FaultySMTPServer()
    server.start()
    try:
        for fault in faults:
            server.add_fault(fault)
        config = write_config(
            folder / "config.toml",
            {"newsletter": {"from": "Orbit <news@orbitdaily.example>", "timezone": "UTC"},
             "delivery": {"transport": "smtp"},
             "smtp": {"host": "127.0.0.1", "port": server.port, "security": "none", "timeout": 5,
                      "connections": connections}},
            sample_feeds(folder),
            subscribers(8),
        )
        code, _out, err = run(config, "send", "--now", NOW)
        assert code == 0, err
        got = server.by_recipient()
        assert all(len(items) == 1 for items in got.values())  # this server never loses a 250, so no duplicate
        stored = records(config)
        assert {e for e, (s, _c, _t) in stored.items() if s == "sent"} == set(got)
        assert {s for s, _c, _t in stored.values()} <= {"sent", "retrying", "failed"}
        assert all(c >= 500 for s, c, _t in stored.values() if s == "failed")
    finally:
        server.stop()
