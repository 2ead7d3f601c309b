"""The operator's commands: `digest init`, `digest feeds add/list/remove`, `send --test`.

Registered on the `digest` group by cli.py; kept apart so that cli.py stays small and each
command imports its module (discovery, the config editor, tqdm) only when it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .errors import DigestError

if TYPE_CHECKING:  # cli imports this module: its Context is named for the type checker only
    from .cli import Context
    from .progress import Progress
    from .settings import Config


def progress(verbose: int) -> Progress:
    """A progress bar when stderr is a terminal (and no -v log lines would tear it), else log lines."""
    from .progress import LogProgress, for_stream

    return for_stream(sys.stderr) if verbose == 0 else LogProgress()


def send_test(load: Callable[[], Config], moment: datetime, test: bool, emails: tuple[str, ...], verbose: int) -> None:
    """`digest send --test EMAIL...` (an option of `send`, defined in cli.py)."""
    from . import config as config_mod
    from . import pipeline
    from .store import Store

    if not test:
        raise click.UsageError("addresses are only taken with --test (digest send --test EMAIL...)")
    if not emails:
        raise click.UsageError("--test needs at least one address (digest send --test EMAIL...)")
    addresses = []
    for email in emails:
        try:
            addresses.append(config_mod.check_email(email))
        except ValueError as exc:
            raise DigestError(f"--test: {exc}") from None
    config = load()
    with Store.read_only(config.state_path) as store:
        sent = pipeline.send_test(config, store, moment, addresses, progress(verbose))
    ok = [o.email for o in sent.outcomes if o.status == "sent"]
    click.echo(
        f"Test of edition {sent.edition.key} ({len(sent.edition.stories)} stories) sent to"
        f" {len(ok)} of {len(addresses)} ({sent.destination}); nothing recorded"
    )
    missed = [o for o in sent.outcomes if o.status != "sent"]
    if missed:
        reply = f"{missed[0].code} {missed[0].text}" if missed[0].code else missed[0].text
        more = f" (and {len(missed) - 1} more)" if len(missed) > 1 else ""
        raise DigestError(f"the test did not reach {missed[0].email}: {reply}{more}")


@click.command()
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path), metavar="[DIR]")
@click.option("--title", help="The newsletter's name (asked if not given).")
@click.option("--from", "sender", metavar="ADDRESS", help='Sender, e.g. "Orbit Daily <news@example.com>" (asked).')
@click.option("--timezone", metavar="ZONE", help="IANA time zone of send_at and edition dates (asked).")
@click.option("--email", metavar="ADDRESS", help="Your address: the first subscriber (asked; default: the sender).")
@click.pass_obj
def init(
    obj: Context, folder: Path | None, title: str | None, sender: str | None, timezone: str | None, email: str | None
) -> None:
    """Write a commented config.toml for a new newsletter (never over an existing one).

    Example: digest init mynews --title "Orbit Daily" --from "Orbit Daily <news@example.com>" --timezone UTC
    """
    from . import config as config_mod
    from . import starter

    target = folder / "config.toml" if folder is not None else obj.config_path
    if target.exists():
        raise DigestError(f"{target} already exists; not overwritten (edit it, or init another folder)")
    title = title or click.prompt("Newsletter title", default="My Daily Digest")
    sender = sender or click.prompt("Sender (From:), e.g. My Digest <news@example.com>")
    timezone = timezone or click.prompt("Time zone", default=starter.local_timezone())
    if email is None:
        from email.utils import parseaddr

        email = click.prompt("Your email address (the first subscriber)", default=parseaddr(sender)[1] or None)
    written = starter.write(target, title, sender, timezone, email or "")
    click.echo(f"Wrote {written}")
    where = f" --config {written}" if written != config_mod.DEFAULT_PATH else ""
    click.echo(f"Next: digest{where} feeds add https://a-site-you-read.example/")


@click.group()
def feeds() -> None:
    """Add, list and remove [[feeds]] in config.toml, keeping every comment.

    add takes a feed's URL or a site's address (its feeds are discovered).
    """


@feeds.command("add")
@click.argument("url")
@click.option("--name", help="The outlet's name shown to readers (default: the feed's own title).")
@click.option("--section", help="Section of the newsletter (default: News).")
@click.option("--priority", type=click.IntRange(-1000, 1000), help="Higher wins the lead of a shared story.")
@click.option("--pick", type=click.IntRange(1), metavar="N", help="When the page offers several feeds: take the Nth.")
@click.pass_obj
def feeds_add(
    obj: Context, url: str, name: str | None, section: str | None, priority: int | None, pick: int | None
) -> None:
    """Find the feed at URL (a feed, or a page that offers feeds), show it and add it.

    Example: digest feeds add https://spacemagz.example/ --section Launch
    """
    from . import config as config_mod
    from . import discover
    from . import feeds as feeds_mod

    if not obj.config_path.exists():
        raise DigestError(f"{obj.config_path}: config file not found: create one with `digest init`")
    config = config_mod.load(obj.config_path, require_feeds=False)
    found = discover.discover(url, config.fetch)
    if len(found) > 1:
        click.echo(f"{url} offers {len(found)} feeds:")
        for i, feed in enumerate(found, 1):
            click.echo(f"  {i}. {feed.title}: {feed.url} ({feed.entries} entries)")
        if pick is None:
            pick = click.prompt("Which one", type=click.IntRange(1, len(found)), default=1)
    if pick is not None and pick > len(found):
        raise DigestError(f"--pick {pick}: {url} offers {len(found)} feed(s)")
    chosen = found[(pick or 1) - 1]
    click.echo(f"Feed: {chosen.title} <{chosen.url}>, {chosen.entries} entries; newest:")
    for title in chosen.newest:
        click.echo(f"  - {title}")
    added = feeds_mod.add(obj.config_path, chosen.url, name or chosen.title, section, priority)
    click.echo(f"Added {added.name!r} (section {added.section}) to {obj.config_path}")


@feeds.command("list")
@click.pass_obj
def feeds_list(obj: Context) -> None:
    """Show each feed's name, section, entries stored and last poll status.

    Example: digest feeds list
    """
    from . import config as config_mod
    from . import feeds as feeds_mod

    click.echo(feeds_mod.format_table(feeds_mod.listing(config_mod.load(obj.config_path, require_feeds=False))))


@feeds.command("remove")
@click.argument("name")
@click.pass_obj
def feeds_remove(obj: Context, name: str) -> None:
    """Remove the feed called NAME from config.toml (its stored entries are kept).

    Example: digest feeds remove "Orbital Wire"
    """
    from . import feeds as feeds_mod

    removed = feeds_mod.remove(obj.config_path, name)
    click.echo(f"Removed {removed.name!r} ({removed.url})")
