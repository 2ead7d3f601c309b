"""Web pages and the signup emails from Jinja2 templates the operator can override.

Templates sit under `web/` (pages, the embeddable box) and `mail/` (confirmation, welcome)
of the packaged templates folder; a file of the same name in `[newsletter] templates` wins,
as for the digest email. Autoescape is on: every value a reader typed is text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from ..errors import RenderError
from ..render import packaged_templates
from ..settings import Config


@dataclass(frozen=True)
class Page:
    """What a route answers: a status, a template under web/ and its values (framework-free)."""

    status: int
    template: str
    context: dict[str, Any] = field(default_factory=dict)


@cache
def _environment(user_dir: Path | None) -> jinja2.Environment:
    search = [str(user_dir)] if user_dir and user_dir.is_dir() else []
    search.append(str(packaged_templates()))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        autoescape=jinja2.select_autoescape(("html", "html.j2"), default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=True,
    )


def render(config: Config, template: str, **context: Any) -> str:
    """One template with the newsletter's settings and sections in its context."""
    env = _environment(config.templates_dir)
    values = {"newsletter": config.newsletter, "sections": config.sections, **context}
    try:
        return env.get_template(template).render(values)
    except jinja2.TemplateError as exc:
        where = (
            f"{config.templates_dir} or the packaged templates" if config.templates_dir else "the packaged templates"
        )
        raise RenderError(f"template {template} ({where}): {exc}") from exc


def box(config: Config, base: str) -> str:
    """The embeddable "Subscribe to Updates" box, posting to {base}/subscribe."""
    return render(config, "web/box.html.j2", action=f"{base}/subscribe")
