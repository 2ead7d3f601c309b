"""Placeholder grouping: exact duplicates only (replaced by the real stage)."""

from __future__ import annotations

from collections.abc import Sequence

from .models import Entry, GroupingSettings, Story


def group(entries: Sequence[Entry], settings: GroupingSettings = GroupingSettings()) -> tuple[Story, ...]:
    seen: dict[str, list[Entry]] = {}
    for e in sorted(entries, key=lambda e: e.id):
        seen.setdefault(e.link or e.id, []).append(e)
    return tuple(Story(g[0], tuple(g[1:]), ()) for g in seen.values())
