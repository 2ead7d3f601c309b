"""The unsubscribe endpoint: RFC 8058 one-click POST, and a confirmation page for a GET.

    POST /unsubscribe?email=...&token=...   (body List-Unsubscribe=One-Click)  -> suppressed at once
    GET  /unsubscribe?email=...&token=...   -> a page with a button (a form POST); changes nothing

GET never unsubscribes: mail scanners and link previewers fetch every link in a message.
The token is an HMAC of the address (mail.unsubscribe_token) under the same key the
mailer used (pipeline.unsubscribe_secret), compared in constant time. An invalid token
gets 403 and changes nothing; a valid one used again is harmless (200, no new row).

`handle()` is plain data in, plain data out, so the preview server can mount it and the
web app (app.py) routes /unsubscribe to it.
"""

from __future__ import annotations

import hmac
import html
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .. import config as config_mod
from .. import mail, pipeline
from ..settings import Config
from ..store import Store

log = logging.getLogger(__name__)

Response = tuple[int, dict[str, str], bytes]
Handler = Callable[[str, str, "str | Mapping[str, Sequence[str]]", bytes], Response]
PATH = "/unsubscribe"
MAX_BODY = 16 * 1024
HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the URL carries the token
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


def handle(
    config: Config,
    method: str,
    path: str,
    query: str | Mapping[str, Sequence[str]],
    body: bytes = b"",
    now: datetime | None = None,
) -> Response:
    """One request to the unsubscribe path -> (status, headers, body)."""
    if not urlsplit(path).path.rstrip("/").endswith(PATH):  # also behind a proxy prefix
        return _page(config, 404, "Not found", "There is nothing here.")
    if method not in ("GET", "HEAD", "POST"):
        status, headers, page = _page(config, 405, "Method not allowed", "Use the link from your email.")
        return status, {**headers, "Allow": "GET, POST"}, page
    params = parse_qs(query, max_num_fields=20) if isinstance(query, str) else query
    email = (params.get("email") or [""])[0].strip()
    token = (params.get("token") or [""])[0].strip()
    with Store(config.state_path) as store:
        if not _valid(email, token, pipeline.unsubscribe_secret(config, store)):
            return _page(config, 403, "Link not valid", "This link is not valid: use the one in your latest email.")
        done = email.lower() in store.suppressed()
        if method == "POST" and not done:
            store.suppress(email, now or datetime.now(UTC), "one-click")
            log.info("unsubscribed %s", email)
            return _page(config, 200, "Unsubscribed", f"{email} gets no more emails from {config.newsletter.title}.")
    if done:
        return _page(config, 200, "Already unsubscribed", f"{email} is already unsubscribed; nothing more to do.")
    return _confirm(config, email)


def _valid(email: str, token: str, secret: bytes) -> bool:
    if not email or not token or len(email) > 320 or any(ord(c) < 32 for c in email):
        return False
    expected = mail.unsubscribe_token(secret, email).encode()
    return hmac.compare_digest(expected, token.encode("utf-8", "replace"))


def _confirm(config: Config, email: str) -> Response:
    form = (
        '<form method="post" action="">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit" style="font:inherit;padding:10px 18px;border:0;border-radius:4px;'
        'background:#1a1a1a;color:#fff;cursor:pointer">Unsubscribe</button></form>'
    )
    return _page(config, 200, "Unsubscribe?", f"Stop sending {config.newsletter.title} to {email}?", form)


def _page(config: Config, status: int, title: str, message: str, extra: str = "") -> Response:
    name = html.escape(config.newsletter.title)
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}: {name}</title></head>"
        '<body style="margin:0;padding:48px 16px;background:#f4f4f1;color:#1a1a1a;'
        'font:16px/1.5 Georgia,serif"><main style="max-width:480px;margin:0 auto;background:#fff;'
        'padding:32px;border:1px solid #e2e2dc">'
        f'<p style="margin:0 0 8px;font:12px/1.4 Helvetica,Arial,sans-serif;letter-spacing:.08em;'
        f'text-transform:uppercase;color:#6b6b66">{name}</p>'
        f'<h1 style="margin:0 0 16px;font-size:24px;font-weight:normal">{html.escape(title)}</h1>'
        f"<p>{html.escape(message)}</p>{extra}</main></body></html>"
    )
    return status, dict(HEADERS), page.encode("utf-8")


def make_handler(source: Config | Path) -> Handler:
    """A handler for the preview server: a Path is re-read per request (edits are seen)."""

    def handler(method: str, path: str, query: str | Mapping[str, Sequence[str]], body: bytes) -> Response:
        config = source if isinstance(source, Config) else config_mod.load(source)
        return handle(config, method, path, query, body)

    return handler
