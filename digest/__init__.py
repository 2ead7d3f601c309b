"""digest: a self-hosted daily newsletter built from RSS/Atom feeds.

The public names are loaded on first use (PEP 562): `import digest.cli` runs this file,
and a command such as `digest --help` must not pay for the pipeline's imports.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import load as load_config
    from .errors import DigestError
    from .models import Edition, Entry, Story
    from .pipeline import build_edition, send_edition
    from .settings import Config

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
_LAZY = {
    "load_config": ("config", "load"),
    "DigestError": ("errors", "DigestError"),
    "Config": ("settings", "Config"),
    "Edition": ("models", "Edition"),
    "Entry": ("models", "Entry"),
    "Story": ("models", "Story"),
    "build_edition": ("pipeline", "build_edition"),
    "send_edition": ("pipeline", "send_edition"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'digest' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value
