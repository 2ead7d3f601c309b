"""Per-subscriber messages built by substitution into pre-encoded parts.

The reference is the straightforward build: fill the markers in the decoded strings, then
encode the whole text in one go (binascii.b2a_qp). The fast copy must decode to the same
text, be valid quoted-printable and parse without defects under the strict policy.
"""

from __future__ import annotations

import binascii
import html
import re
from datetime import UTC, date, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser

from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from digest import mail
from digest.models import EMAIL_MARK, NAME_MARK, UNSUBSCRIBE_MARK, Rendered
from digest.settings import NewsletterSettings, Subscriber

DAY = date(2026, 11, 21)
NOW = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
NEWSLETTER = NewsletterSettings(
    title="Orbit Daily", sender="Orbit Daily <news@orbitdaily.example>", base_url="https://news.example.com"
)
MARKS = (NAME_MARK, EMAIL_MARK, UNSUBSCRIBE_MARK)
HTML = (
    "<!doctype html>\n<html><body>\n"
    f"<p>Hello {NAME_MARK},</p>\n"
    + "<p>"
    + "A long inlined line with = signs and caf\u00e9s. " * 40
    + f"{NAME_MARK} again</p>\n"
    + f"{EMAIL_MARK}{NAME_MARK}\n"
    + f'<p style="color: #666"><a href="{UNSUBSCRIBE_MARK}">Unsubscribe</a> {EMAIL_MARK} \n'
    + "trailing blank before a break \n.\n"
    + f'<a href="{UNSUBSCRIBE_MARK}">{UNSUBSCRIBE_MARK}</a></p></body></html>'
)
TEXT = f"ORBIT DAILY\n\nHello {NAME_MARK},\n" + "=" * 120 + f"\nSent to {EMAIL_MARK}.\nUnsubscribe: {UNSUBSCRIBE_MARK}"
RENDERED = Rendered(("Launch",), "Orbit Daily: 21 November 2026: Colossus reaches orbit", HTML, TEXT, 3)
NO_CR = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r")


def one_go(text: str) -> bytes:
    """The reference encoding: the whole filled text at once, CRLF line ends, final CRLF."""
    encoded = binascii.b2a_qp(text.encode(), quotetabs=False, istext=True, header=False)
    encoded = encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return encoded if encoded.endswith(b"\r\n") else encoded + b"\r\n"


def fill(text: str, values: dict[str, str]) -> str:
    return re.sub("|".join(MARKS), lambda m: values[m.group(0)], text)


def assert_valid_qp(encoded: bytes) -> None:
    assert b"\n" not in encoded.replace(b"\r\n", b"")
    for line in encoded.split(b"\r\n"):
        assert len(line) <= 76, line
        assert not line.endswith((b" ", b"\t")), line  # trailing blanks do not survive transport
        assert not re.search(rb"=(?![0-9A-F]{2}|$)", line), line


def valid_email(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


marked_texts = st.lists(
    st.one_of(st.sampled_from(MARKS), st.text(NO_CR, max_size=200), st.sampled_from([" ", "\t", "\n", ".", "=", "é"])),
    max_size=12,
).map("".join)
values = st.fixed_dictionaries({mark: st.text(NO_CR, max_size=120) for mark in MARKS})


@given(marked_texts, values, st.sampled_from([0, 3, 80, 10**6]))
@settings(max_examples=300, deadline=None)
@example(f"x{NAME_MARK}. \n", {NAME_MARK: "", EMAIL_MARK: "", UNSUBSCRIBE_MARK: ""}, 0)
@example("0\x80\x80\x80\U00010000" + "0" + "\x80" * 5 + "\U00010000 \n", dict.fromkeys(MARKS, ""), 0)  # =20 at column 77
@example(f"{EMAIL_MARK}{NAME_MARK}" + "y" * 90, {NAME_MARK: "a", EMAIL_MARK: "b" * 75, UNSUBSCRIBE_MARK: ""}, 0)
@example(f"\n{NAME_MARK}", dict.fromkeys(MARKS, ""), 10**6)  # an empty last value: no extra CRLF
def test_pieces_decode_to_the_filled_text(text: str, vals: dict[str, str], context: int) -> None:
    encoded = b"".join(mail._QuotedPrintable(text, context).fill(vals))
    expected = fill(text, vals)
    assert_valid_qp(encoded[:-2])
    assert encoded.endswith(b"\r\n")
    decoded = binascii.a2b_qp(encoded).decode().replace("\r\n", "\n")
    assert decoded.rstrip("\n") == expected.rstrip("\n")
    if context == 10**6:  # whole lines re-encoded: byte for byte the one-go encoding
        assert encoded == one_go(expected)


@given(st.from_regex(mail._PLAIN, fullmatch=True).filter(lambda s: s[0] != "."), st.booleans())
def test_plain_fast_path_is_what_b2a_qp_writes(text: str, last: bool) -> None:
    encoded = mail._qp(text, last)
    reference = one_go(text)
    if not text.endswith("\n") and not last:
        reference = reference[:-2] + b"=\r\n"
    assert encoded == reference


def build(name: str, email: str) -> tuple[mail.Recipient, EmailMessage, bytes]:
    composer = mail.Composer(RENDERED, RENDERED.html, NEWSLETTER, DAY, NOW)
    to = mail.recipient(Subscriber(email, name), DAY, NEWSLETTER, b"secret")
    raw = composer.message(to)
    for line in raw.split(b"\r\n"):
        assert len(line) < 998
    assert b"\n" not in raw.replace(b"\r\n", b"")
    parsed = BytesParser(policy=policy.strict).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    return to, parsed, raw


def rfc2047_display_name(raw: bytes) -> str:
    """The To phrase as RFC 2047 says to read it: blanks between encoded-words dropped (the
    new-style parser keeps them, so it reads a name split across words with a space)."""
    match = re.search(rb"^To: (.*?)\r\n(?! )", raw, re.S | re.M)
    assert match is not None
    phrase = match.group(1).decode().replace("\r\n", "").rpartition(" <")[0]
    return str(make_header(decode_header(phrase)))


names = st.one_of(
    st.text(NO_CR, max_size=100),
    st.lists(st.sampled_from(['"', ",", "\\", "=?utf-8?q?x?=", "🚀", "Zoë", "O'Brien", " ", "(", "<a@b>", "..."])).map(
        "".join
    ),
)
emails = st.emails().map(valid_email).filter(bool)


@given(names, emails)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@example('Zoë "Z" O\'Brien, Ph.D. 🚀' * 5, "zoe.o'brien@example.com")
@example("", "a@b.example")
@example("=?utf-8?q?evil?=", "a@b.example")
def test_message_parses_strictly_and_decodes_to_the_reference(name: str, email: str) -> None:
    to, msg, raw = build(name, email)
    assert not msg.defects
    address, expected = msg["To"].addresses[0], mail.header_text(name, 80)
    assert address.addr_spec == validate_email(email, check_deliverability=False).ascii_email  # IDNA domain
    if expected.isascii() and "=?" not in expected:
        assert address.display_name == expected
    else:
        assert rfc2047_display_name(raw) == expected
        assert address.display_name.replace(" ", "") == expected.replace(" ", "")
    assert str(msg["Message-ID"]) == to.message_id
    assert str(msg["List-Unsubscribe"]) == f"<{to.unsubscribe_url}>, <{to.unsubscribe_mailto}>"
    assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert str(msg["Subject"]) == RENDERED.subject
    values_text = {NAME_MARK: name or "reader", EMAIL_MARK: email, UNSUBSCRIBE_MARK: to.unsubscribe_url}
    values_html = {mark: html.escape(value) for mark, value in values_text.items()}
    for kind, template, vals in (("plain", TEXT, values_text), ("html", HTML, values_html)):
        part = msg.get_body((kind,))
        assert part is not None and part["Content-Transfer-Encoding"] == "quoted-printable"
        raw = part.get_payload(decode=False).encode()
        for line in raw.splitlines():
            assert len(line) <= 76
        content = part.get_content().replace("\r\n", "\n")
        assert content.rstrip("\n") == fill(template, vals).rstrip("\n")


def test_idn_domain_is_written_in_ascii() -> None:
    _, msg, _ = build("Ada", "ada@bücher.example")
    assert msg["To"].addresses[0].addr_spec == "ada@xn--bcher-kva.example"


def test_long_encoded_name_is_split_into_short_words() -> None:
    composer = mail.Composer(RENDERED, RENDERED.html, NEWSLETTER, DAY, NOW)
    raw = composer.message(mail.recipient(Subscriber("a@b.example", "🚀" * 80), DAY, NEWSLETTER, b"k"))
    head = raw.split(b"\r\nMessage-ID:")[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    assert all(len(word) <= 75 for word in re.findall(rb"=\?utf-8\?b\?[^?]*\?=", head))


def test_preview_html_part_is_filled() -> None:
    composer = mail.Composer(RENDERED, RENDERED.html, NEWSLETTER, DAY, NOW)
    to = mail.recipient(Subscriber("ada@example.com", "Ada & co"), DAY, NEWSLETTER, b"k")
    page = mail.html_part(composer.message(to))
    assert "<p>Hello Ada &amp; co,</p>" in page
    assert f'<a href="{html.escape(to.unsubscribe_url)}">' in page
