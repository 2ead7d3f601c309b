"""Inline the template's CSS with premailer, once per rendering.

The network is off (premailer would otherwise fetch any linked stylesheet). Rules that
cannot be inlined (`@media`, dark mode) stay in one `<style>` block with `!important`.
Width and height attributes are the template's own (Outlook sizes images by them), so
premailer is told not to rewrite them from the CSS.
"""

from __future__ import annotations

import logging
import warnings

from premailer import Premailer

from .errors import RenderError


def inline_css(html: str) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return str(
                Premailer(
                    html,
                    allow_network=False,
                    allow_loading_external_files=False,
                    keep_style_tags=False,
                    strip_important=False,
                    remove_classes=False,
                    disable_validation=True,
                    # the template's width/height attributes are Outlook's layout: CSS must not overwrite them
                    disable_basic_attributes=["width", "height"],
                    cssutils_logging_level=logging.CRITICAL,
                ).transform(pretty_print=False)
            )
    except Exception as exc:  # premailer raises assorted lxml/cssutils errors
        raise RenderError(f"cannot inline the CSS of the rendered email: {type(exc).__name__}: {exc}") from exc
