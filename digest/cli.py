"""The `digest` command: parse options, call one function, print one line.

A DigestError becomes `Error: ...` on stderr and exit 1; the traceback only with -v.
Anything else is a bug and propagates.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from . import config as config_mod
from . import pipeline
from .errors import DigestError
from .models import Config
from .store import Store

log = logging.getLogger("digest")
F = TypeVar("F", bound=Callable[..., Any])


class Context:
    def __init__(self, config_path: str | None, verbose: int) -> None:
        self.config_path = config_mod.resolve_path(config_path)
        self.verbose = verbose

    def config(self) -> Config:
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
                log.exception("details")
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
    logging.basicConfig(
        level=logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = Context(config_path, verbose)


@main.command()
@now_option
@click.option("--dry-run", is_flag=True, help="Fetch and build, but record no edition and send nothing.")
@click.pass_obj
def send(obj: Context, now: str | None, dry_run: bool) -> None:
    """Fetch, build (or resume) today's edition and deliver it to every subscriber.

    Example: digest send --now 2026-11-21T07:00:00+00:00
    """
    config, moment = obj.config(), parse_now(now)
    with Store(config.state_path) as store:
        report = pipeline.send_edition(config, store, moment, dry_run=dry_run)
    click.echo(report.summary())


@main.command()
@now_option
@click.pass_obj
def fetch(obj: Context, now: str | None) -> None:
    """Poll the feeds and store new entries; sends nothing.

    Example: digest fetch
    """
    config, moment = obj.config(), parse_now(now)
    with Store(config.state_path) as store, store.lock("fetch", "polling"):
        report = pipeline.poll(config, store, moment)
    failed = f" ({report.failed} failed)" if report.failed else ""
    click.echo(f"{report.feeds} feeds{failed}, {report.new_entries} new entries")


@main.command()
@now_option
@click.pass_obj
def status(obj: Context, now: str | None) -> None:
    """Recent editions with delivery counts, and failing feeds.

    Example: digest status
    """
    config = obj.config()
    parse_now(now)
    with Store(config.state_path) as store:
        editions = store.editions(limit=7)
        if not editions:
            click.echo("No editions yet.")
        for edition in editions:
            counts = store.delivery_counts(edition.day)
            parts = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("sent", "pending", "retrying", "failed"))
            click.echo(f"{edition.key}: {len(edition.stories)} stories; {parts}")
            for line in _delivery_problems(store, edition.day):
                click.echo(line)
        health = store.feed_health()
        click.echo("Feeds: all healthy." if not health else "Failing feeds:")
        for name, reason, count, since in health:
            click.echo(f"  {name}: {reason} ({count} failed polls since {since})")


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


def _preview_output(config: Config, output: Path, now: datetime) -> None:
    with Store(config.state_path) as store:
        html = pipeline.preview_html(config, store, now)
    output.write_text(html, encoding="utf-8")


@main.command()
@now_option
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the email HTML to FILE.")
@click.pass_obj
def preview(obj: Context, now: str | None, output: Path | None) -> None:
    """Show the next edition as it will arrive; changes no state.

    Example: digest preview --output next.html
    """
    config, moment = obj.config(), parse_now(now)
    if output is None:
        raise DigestError("the preview server is not available yet: use --output FILE")
    _preview_output(config, output, moment)
    click.echo(f"Wrote {output}")
