"""digest: a self-hosted daily newsletter built from RSS/Atom feeds."""

from __future__ import annotations

from .config import load as load_config
from .errors import DigestError
from .models import Config, Edition, Entry, Story
from .pipeline import build_edition, send_edition

__version__ = "0.1.0"
__all__ = [
    "Config",
    "DigestError",
    "Edition",
    "Entry",
    "Story",
    "__version__",
    "build_edition",
    "load_config",
    "send_edition",
]
