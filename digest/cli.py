"""The `digest` command: parse options, call one function, print one line.

A DigestError becomes `Error: ...` on stderr and exit 1; the traceback only with -v.
Anything else is a bug and propagates.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import cli_operator
from .errors import DigestError

if TYPE_CHECKING:
    from .settings import Config
    from .store import Store

# Each command imports what it runs, inside its body: `digest --help` loads click and this
# file, `digest fetch` no inliner or scheduler (tests/test_startup.py keeps it so).

QUIET = frozenset({"status"})
"""Commands that log nothing: unless -v, they skip importing and configuring logging (8 ms)."""
F = TypeVar("F", bound=Callable[..., Any])


class Context:
    def __init__(self, config_path: str | None, verbose: int) -> None:
        from . import config as config_mod

        self.config_path = config_mod.resolve_path(config_path)
        self.verbose = verbose

    def config(self) -> Config:
        from . import config as config_mod

        return config_mod.load(self.config_path)


def parse_now(value: str | None) -> datetime:
    """`--now`, else `$DIGEST_NOW`, else the clock; ISO 8601 with an offset."""
    text = value or os.environ.get("DIGEST_NOW")
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DigestError(
            f"--now / DIGEST_NOW: not an ISO 8601 time: {text!r} (e.g. 2026-11-21T07:00:00+00:00)"
        ) from None
    if moment.tzinfo is None:
        raise DigestError(f"--now / DIGEST_NOW: {text!r} has no UTC offset (add +00:00 or Z)")
    return moment.astimezone(UTC)


class DigestGroup(click.Group):
    """Turns DigestError into one line and exit 1, wherever it is raised."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DigestError as exc:
            verbose = ctx.obj.verbose if isinstance(ctx.obj, Context) else 0
            if verbose:
                import logging

                logging.getLogger("digest").exception("details")
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


def now_option(func: F) -> F:
    return click.option("--now", metavar="ISO8601", help="Fix the clock (testing days); also $DIGEST_NOW.")(func)


@click.group(cls=DigestGroup)
@click.option(
    "--config", "-c", "config_path", metavar="FILE", help="Config file (else $DIGEST_CONFIG, else ./config.toml)."
)
@click.option("-v", "--verbose", count=True, help="More logging; -v also shows tracebacks.")
@click.version_option(package_name="digest")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """digest: a daily newsletter from RSS/Atom feeds, one story per event, delivered once."""
    if verbose or ctx.invoked_subcommand not in QUIET:
        import logging

        logging.basicConfig(
            level=logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    ctx.obj = Context(config_path, verbose)


@main.command()
@now_option
@click.option("--dry-run", is_flag=True, help="Fetch and build, but record no edition and send nothing.")
@click.option("--test", is_flag=True, help="Send the edition as it would go out now to EMAIL... only; record nothing.")
@click.argument("emails", nargs=-1, metavar="[EMAIL...]")
@click.pass_obj
def send(obj: Context, now: str | None, dry_run: bool, test: bool, emails: tuple[str, ...]) -> None:
    """Fetch, build (or resume) today's edition and deliver it to every subscriber.

    Examples: digest send --now 2026-11-21T07:00:00+00:00; digest send --test me@example.com
    """
    from . import pipeline
    from .store import Store

    if test or emails:
        cli_operator.send_test(obj.config, parse_now(now), test, emails, obj.verbose)
        return
    config, moment = obj.config(), parse_now(now)
    with Store(config.state_path) as store:
        report = pipeline.send_edition(
            config, store, moment, dry_run=dry_run, progress=cli_operator.progress(obj.verbose)
        )
    click.echo(report.summary())


@main.command()
@now_option
@click.pass_obj
def fetch(obj: Context, now: str | None) -> None:
    """Poll the feeds and store new entries; sends nothing.

    Example: digest fetch
    """
    from . import pipeline
    from .store import Store

    config, moment = obj.config(), parse_now(now)
    with Store(config.state_path) as store, store.lock("fetch", "polling"):
        report = pipeline.poll(config, store, moment, progress=cli_operator.progress(obj.verbose))
    failed = f" ({report.failed} failed)" if report.failed else ""
    click.echo(f"{report.feeds} feeds{failed}, {report.new_entries} new entries")


@main.command()
@click.option("--now", metavar="ISO8601", help="Start the daemon's clock at this time; it then advances (testing).")
@click.pass_obj
def run(obj: Context, now: str | None) -> None:
    """The scheduler daemon: poll feeds every poll_every, send at send_at; stop with SIGTERM.

    Example: digest --config /etc/digest/config.toml run
    """
    import logging

    from . import schedule  # APScheduler is only needed here

    if obj.verbose == 0:  # a daemon reports its polls and sends: one INFO line each
        logging.getLogger("digest").setLevel(logging.INFO)
        for chatty in ("digest.fetch", "digest.deliver"):  # one line per feed / message: -v shows them
            logging.getLogger(chatty).setLevel(logging.WARNING)
    start = parse_now(now) if now or os.environ.get("DIGEST_NOW") else None
    schedule.run(obj.config_path, start)


@main.command()
@now_option
@click.pass_obj
def status(obj: Context, now: str | None) -> None:
    """Recent editions with delivery counts, and failing feeds.

    Example: digest status
    """
    from .store import Store

    config = obj.config()
    parse_now(now)
    with Store(config.state_path) as store:
        editions = store.edition_summaries(limit=7)
        if not editions:
            click.echo("No editions yet.")
        for day, stories, feed_health in editions:
            counts = store.delivery_counts(day)
            parts = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("sent", "pending", "retrying", "failed"))
            click.echo(f"{day.isoformat()}: {stories} stories; {parts}")
            if feed_health:  # for the operator; never rendered to readers
                click.echo(f"  feed health: {'; '.join(feed_health)}")
            for line in _delivery_problems(store, day):
                click.echo(line)
        health = store.feed_health()
        click.echo("Feeds: all healthy." if not health else "Failing feeds:")
        for name, reason, count, since in health:
            click.echo(f"  {name}: {reason} ({count} failed polls since {since})")
        for name, url in store.moved_feeds():
            click.echo(f"  {name}: moved permanently to {url} (update its url in the config)")
        for line in _bounce_lines(store):
            click.echo(line)
        for line in _signup_lines(store, parse_now(now)):
            click.echo(line)


def _signup_lines(store: Store, moment: datetime, days: int = 7) -> list[str]:
    """Web signups of the last days: confirmed, and still pending (or never confirmed)."""
    from datetime import timedelta

    from .signup_store import SignupBook

    pending, confirmed = SignupBook(store, create=False).counts(moment - timedelta(days=days))
    return [f"Signups (last {days} days): {confirmed} confirmed, {pending} pending"] if pending or confirmed else []


def _bounce_lines(store: Store, limit: int = 50) -> list[str]:
    """Addresses suppressed by a bounce or a complaint, newest first (capped), with reason and date."""
    from .bounce_store import BounceBook

    held = list(BounceBook(store, create=False).suppressions().items())
    lines = [f"Bounced and complained addresses: {len(held)}"] if held else []
    lines += [f"  {status} {email}: {reason} ({at})" for email, (status, reason, at) in held[:limit]]
    if len(held) > limit:
        lines.append(f"  ... and {len(held) - limit} more (digest subscribers list shows them all)")
    return lines


def _delivery_problems(store: Store, day: date, max_retrying: int = 20) -> list[str]:
    """Every failed address with the server's reply; the retrying ones (capped) with their next attempt."""
    lines, retrying = [], 0
    for email, state, code, text, next_attempt in store.delivery_problems(day):
        reply = f"{code} {text}" if code else text
        if state == "failed":
            lines.append(f"  failed {email}: {reply}")
            continue
        retrying += 1
        if retrying <= max_retrying:
            when = f" (next attempt {next_attempt:%Y-%m-%d %H:%M} UTC)" if next_attempt else ""
            lines.append(f"  retrying {email}: {reply}{when}")
    if retrying > max_retrying:
        lines.append(f"  ... and {retrying - max_retrying} more retrying")
    return lines


@main.command()
@now_option
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default="a free one", help="Port on 127.0.0.1.")
@click.option("--no-open", is_flag=True, help="Do not open the browser.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the email HTML to FILE.")
@click.option("--subscriber", metavar="EMAIL", help="Show this subscriber's copy (sections, name).")
@click.option("--offline", is_flag=True, help="Do not poll the feeds first; use what the state holds.")
@click.option(
    "--archive", type=click.Path(file_okay=False, path_type=Path), help="Write past editions as static files to DIR."
)
@click.pass_obj
def preview(
    obj: Context,
    now: str | None,
    port: int,
    no_open: bool,
    output: Path | None,
    subscriber: str | None,
    offline: bool,
    archive: Path | None,
) -> None:
    """Show the next edition in a browser as each subscriber will get it; changes no state.

    Examples: digest preview; digest preview --output next.html; digest preview --archive public/archive
    """
    from . import preview as preview_driver

    config = obj.config()
    fixed = parse_now(now) if now or os.environ.get("DIGEST_NOW") else None
    if archive is not None:
        from . import archive as web_archive

        count = web_archive.write(config, archive)
        click.echo(f"Wrote {count} editions to {archive}/: host it at base_url/archive/ (View in browser)")
    elif output is not None:
        preview_driver.write_email(config, output, fixed or parse_now(None), subscriber, offline)
        click.echo(f"Wrote {output}")
    else:
        preview_driver.serve(
            obj.config_path,
            port=port,
            now=fixed,
            offline=offline,
            subscriber=subscriber,
            open_browser=not no_open,
            announce=lambda line: click.echo(line),
        )


@main.command()
@now_option
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path), help="Read every message of this Maildir.")
@click.option("--mbox", type=click.Path(dir_okay=False, path_type=Path), help="Read every message of this mbox file.")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read one message from standard input (MTA pipe).")
@click.pass_obj
def bounces(obj: Context, now: str | None, maildir: Path | None, mbox: Path | None, from_stdin: bool) -> None:
    """Read bounce and complaint messages; suppress dead and complaining addresses.

    Without an option, reads the [bounces] maildir / mbox / imap of the config. Each
    message counts once, however often it is read.

    Examples: digest bounces --maildir ~/Maildir/.bounces; digest bounces --stdin < dsn.eml
    """
    import itertools

    from . import mailboxes, pipeline
    from .store import Store

    if sum((maildir is not None, mbox is not None, from_stdin)) > 1:
        raise click.UsageError("give at most one of --maildir, --mbox, --stdin")
    config, moment = obj.config(), parse_now(now)
    if maildir is not None:
        sources = [mailboxes.from_maildir(maildir)]
    elif mbox is not None:
        sources = [mailboxes.from_mbox(mbox)]
    elif from_stdin:
        sources = [mailboxes.from_stream(sys.stdin.buffer)]
    else:
        sources = mailboxes.configured(config.bounces)
    if not sources:
        raise DigestError(
            "no bounce source: pass --maildir DIR, --mbox FILE or --stdin, or set [bounces] maildir, mbox or imap"
        )
    with Store(config.state_path) as store:
        report = pipeline.read_bounces(config, store, itertools.chain.from_iterable(sources), moment)
    click.echo(report.summary())


# --------------------------------------------------------------------------- subscribers


@main.group()
def subscribers() -> None:
    """List and edit [[subscribers]] in config.toml, keeping every comment.

    remove deletes the entry but keeps an unsubscribe on record; prune removes every
    unsubscribed address from the file; add --resubscribe lifts an unsubscribe.
    """


@subscribers.command("list")
@click.pass_obj
def subscribers_list(obj: Context) -> None:
    """Show email, name, topics and status (active or unsubscribed).

    Example: digest subscribers list
    """
    from . import subscribers as subs

    config = obj.config()
    rows = subs.listing(config, subs.suppressed_addresses(config))
    click.echo(subs.format_table(_with_bounce_status(config, rows)))
    for line in _web_signups(config):
        click.echo(line)


def _web_signups(config: Config) -> list[str]:
    """Who came through the signup form, when they confirmed and from which page."""
    if not config.state_path.exists():
        return []
    from . import config as config_mod
    from .signup_store import SignupBook
    from .store import Store

    store = Store.read_only(config.state_path)
    try:
        came = SignupBook(store, create=False).confirmed_by_address()
    finally:
        store.close()
    listed = [(s.email, came[config_mod.address_key(s.email).lower()]) for s in config.subscribers
              if config_mod.address_key(s.email).lower() in came]
    lines = [f"Signed up through the web form: {len(listed)}"] if listed else []
    lines += [f"  {email}: confirmed {at:%Y-%m-%d %H:%M} UTC from {source}" for email, (at, source) in listed]
    return lines


def _with_bounce_status(config: Config, rows: list[Any]) -> list[Any]:
    """`bounced (reason, date)` / `complained (...)` instead of `unsubscribed` where a bounce suppressed."""
    if not config.state_path.exists():
        return rows
    from dataclasses import replace

    from . import config as config_mod
    from .bounce_store import BounceBook
    from .store import Store

    store = Store.read_only(config.state_path)
    try:
        held = BounceBook(store, create=False).suppressions()
    finally:
        store.close()
    out = []
    for row in rows:
        found = held.get(config_mod.address_key(row.email)) if row.status != "active" else None
        out.append(replace(row, status=f"{found[0]} ({found[1]}, {found[2]})") if found else row)
    return out


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="Name shown in the greeting and the To: header.")
@click.option("--topic", "topics", multiple=True, metavar="SECTION", help="Only this section (repeatable); none = all.")
@click.option("--resubscribe", is_flag=True, help="Lift an earlier unsubscribe (only if the reader asked).")
@click.pass_obj
def subscribers_add(obj: Context, email: str, name: str, topics: tuple[str, ...], resubscribe: bool) -> None:
    """Add a subscriber to config.toml.

    Example: digest subscribers add ada@example.com --name "Ada" --topic Launch
    """
    from . import subscribers as subs

    before = {s.email for s in obj.config().subscribers}
    added = subs.add(obj.config_path, email, name, topics, exist_ok=resubscribe)
    if added.email in before:
        click.echo(f"{added.email} is already in {obj.config_path}")
    else:
        click.echo(f"Added {added.email}" + (f" (topics: {', '.join(added.topics)})" if added.topics else ""))
    config = obj.config()
    if resubscribe:
        from .bounce_store import BounceBook
        from .store import Store

        with Store(config.state_path) as store:
            lifted = store.unsuppress(added.email)
            BounceBook(store).lift(added.email)  # a bounce or complaint suppression, and the soft count
        click.echo(f"Lifted the unsubscribe of {added.email}" if lifted else f"{added.email} was not unsubscribed")
    elif added.email.lower() in subs.suppressed_addresses(config):
        click.echo(f"Note: {added.email} unsubscribed earlier and gets no mail; --resubscribe if they asked back")


@subscribers.command("remove")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@click.pass_obj
def subscribers_remove(obj: Context, emails: tuple[str, ...]) -> None:
    """Remove subscribers from config.toml (an unsubscribe stays on record).

    Example: digest subscribers remove ada@example.com
    """
    from . import subscribers as subs

    for email in subs.remove(obj.config_path, emails):
        click.echo(f"Removed {email}")


@subscribers.command("prune")
@click.pass_obj
def subscribers_prune(obj: Context) -> None:
    """Remove every unsubscribed address from config.toml.

    Example: digest subscribers prune
    """
    from . import subscribers as subs

    config = obj.config()
    suppressed = subs.suppressed_addresses(config)
    why = {r.email: r.status for r in _with_bounce_status(config, subs.listing(config, suppressed))}
    removed = subs.prune(obj.config_path, suppressed)
    for email in removed:
        click.echo(f"Removed {email} ({why.get(email, 'unsubscribed')})")
    click.echo(f"{len(removed)} unsubscribed addresses removed")


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.csv")
@click.pass_obj
def subscribers_import(obj: Context, csv_file: Path) -> None:
    """Add subscribers from a CSV file: email,name,topics (topics split by ; or |).

    Example: digest subscribers import people.csv
    """
    from . import subscribers as subs

    for line in subs.import_csv(obj.config_path, csv_file).lines():
        click.echo(line)


# ------------------------------------------------------------ operator: init, feeds (in digest/cli_operator.py)

@main.command()
@click.option("--listen", metavar="HOST:PORT", help="Address to serve on (else [web] listen).")
@click.pass_obj
def serve(obj: Context, listen: str | None) -> None:
    """Only the web part: signup, confirm, preferences and unsubscribe (for sending from cron).

    Example: digest serve --listen 127.0.0.1:8025
    """
    import logging

    from .web import server  # Starlette and uvicorn load here only

    if obj.verbose == 0:
        logging.getLogger("digest").setLevel(logging.INFO)
    server.serve(obj.config_path, listen, lambda line: click.echo(line))


@main.command("subscribe-form")
@click.pass_obj
def subscribe_form(obj: Context) -> None:
    """Print the "Subscribe to Updates" HTML box to paste into your own site.

    Example: digest subscribe-form > subscribe-box.html
    """
    from .web import pages

    config = obj.config()
    if not config.newsletter.base_url:
        raise DigestError("[newsletter] base_url is empty: the box must post to {base_url}/subscribe; set it first")
    click.echo(pages.box(config, config.newsletter.base_url), nl=False)
    if not config.web.embed_origins:
        click.echo(
            "Note: a page on another site may post the box only if [web] embed_origins lists that site's origin",
            err=True,
        )


main.add_command(cli_operator.init)
main.add_command(cli_operator.feeds)
