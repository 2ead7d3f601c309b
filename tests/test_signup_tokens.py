"""Signup tokens and form handling as properties (issue 14): no input raises, no forgery passes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from conftest import SUBSCRIBERS, MakeConfig, sample_feeds, write_config
from hypothesis import given, settings
from hypothesis import strategies as st

from digest import config as config_mod
from digest import mail
from digest.signup_store import Signup, SignupBook
from digest.store import Store
from digest.web import signup

SECRET = b"k" * 32
NOW = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
SIGNUP = Signup(42, "ada@example.com", "Ada", (), NOW, "https://x.example/", "nonce-abcdefgh", None)


@given(st.text(max_size=200))
def test_no_string_is_a_confirm_token_unless_signed(token: str) -> None:
    found = signup.read_confirm_token(SECRET, token, NOW)
    assert found in ("invalid", "expired") or token.strip() == signup.confirm_token(SECRET, SIGNUP, NOW)
    assert signup.form_token_ok(SECRET, token, NOW) is False or token == signup.form_token(SECRET, NOW)
    assert signup.preferences_ok(SECRET, "ada@example.com", token) is (
        token == mail.preferences_token(SECRET, "ada@example.com")
    )


@given(st.integers(min_value=0, max_value=14 * 24 * 3600))
def test_confirm_tokens_last_seven_days(age: int) -> None:
    token = signup.confirm_token(SECRET, SIGNUP, NOW)
    found = signup.read_confirm_token(SECRET, token, NOW + timedelta(seconds=age))
    assert found == ((42, "nonce-abcdefgh") if age <= 7 * 24 * 3600 else "expired")


@given(st.binary(min_size=1, max_size=8), st.sampled_from(["confirm", "form", "preferences"]))
def test_a_token_of_one_key_or_purpose_fails_under_another(other: bytes, purpose: str) -> None:
    token = {
        "confirm": signup.confirm_token(other + SECRET, SIGNUP, NOW),
        "form": signup.form_token(other + SECRET, NOW),
        "preferences": mail.preferences_token(other + SECRET, "ada@example.com"),
    }[purpose]
    assert signup.read_confirm_token(SECRET, token, NOW) == "invalid"
    assert not signup.form_token_ok(SECRET, token, NOW)
    assert not signup.preferences_ok(SECRET, "ada@example.com", token)
    # and across purposes under the same key
    assert not signup.form_token_ok(SECRET, signup.confirm_token(SECRET, SIGNUP, NOW), NOW)
    assert not signup.preferences_ok(SECRET, "ada@example.com", mail.unsubscribe_token(SECRET, "ada@example.com"))


def test_client_hash_is_keyed_and_groups_an_ipv6_64() -> None:
    assert signup.client_hash(SECRET, "2001:db8:1:2::1") == signup.client_hash(SECRET, "2001:db8:1:2:ffff::9")
    assert signup.client_hash(SECRET, "2001:db8:1:2::1") != signup.client_hash(SECRET, "2001:db8:1:3::1")
    assert signup.client_hash(SECRET, "192.0.2.1") != signup.client_hash(SECRET, "192.0.2.2")
    assert signup.client_hash(SECRET, "192.0.2.1") != signup.client_hash(b"other", "192.0.2.1")
    assert "192.0.2.1" not in signup.client_hash(SECRET, "192.0.2.1")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> config_mod.Config:
    folder = tmp_path_factory.mktemp("signup-property")
    tables = {
        "newsletter": {"title": "Orbit Daily", "from": "news@orbitdaily.example", "base_url": "https://n.example"}
    }
    return config_mod.load(write_config(folder / "config.toml", tables, sample_feeds(folder), SUBSCRIBERS))


@settings(max_examples=60, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(["email", "name", "topics", "website", "form_token", "x"]),
        st.lists(st.text(max_size=60), max_size=3),
        max_size=6,
    )
)
def test_any_form_gets_a_page_never_an_error(loaded: config_mod.Config, fields: dict[str, list[str]]) -> None:
    with Store(loaded.state_path) as store:
        visit = signup.Visit(SECRET, "client", "https://x.example/", "https://news.example", NOW)
        page = signup.subscribe(loaded, store, fields, visit)
    assert page.status in (200, 400, 429)
    if page.status == 400:
        assert page.context["errors"]


def test_admissions_at_once_never_exceed_the_limit(make_config: MakeConfig) -> None:
    config = config_mod.load(make_config())
    results: list[str] = []

    def admit(i: int) -> None:
        with Store(config.state_path) as store:
            book = SignupBook(store)
            got = book.admit(f"r{i}@example.com", "", (), "s", "one-client", NOW, per_client_hour=5, mail_interval=600)
            results.append(got.limited or "ok")

    threads = [threading.Thread(target=admit, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == ["client"] * 25 + ["ok"] * 5


def test_unconfirmed_signups_are_deleted_after_their_link_expires(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Addresses nobody confirmed are not kept: the next signup after 8 days removes them."""
    from digest.signup_store import PENDING_KEPT
    from digest.store import Store

    start = datetime(2026, 11, 1, 12, tzinfo=UTC)
    limits = {"per_client_hour": 5, "mail_interval": 600.0}
    with Store(tmp_path / "state.sqlite3") as store:
        book = SignupBook(store)
        ignored = book.admit("gone@example.com", "", (), "https://site.example/", "c1", start, **limits).signup
        kept = book.admit("kept@example.com", "", (), "https://site.example/", "c2", start, **limits).signup
        assert ignored is not None and kept is not None
        assert book.confirm(kept, start + timedelta(days=1), "c2")
        book.admit("new@example.com", "", (), "https://site.example/", "c3", start + PENDING_KEPT - timedelta(minutes=1), **limits)
        assert book.get(ignored.id) is not None  # still inside its link's life (and a day's grace)
        book.admit("later@example.com", "", (), "https://site.example/", "c3", start + PENDING_KEPT + timedelta(minutes=1), **limits)
        assert book.get(ignored.id) is None
        confirmed = book.get(kept.id)
        assert confirmed is not None and confirmed.confirmed is not None  # the consent record stays
