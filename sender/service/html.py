"""sender's own HTML pages: where their templates and static files live.

The landing page and the admin pages are plain HTML rendered by jinja2 (through
:class:`~sender.compose.render.PageTemplates`, autoescaped), styled by one CSS file that
sender serves itself at ``/static``. Each page extends ``pages/_base.html``.
"""

from __future__ import annotations

from pathlib import Path

from sender.compose.render import PageTemplates

__all__ = ["PAGES", "STATIC"]

_HERE = Path(__file__).resolve().parent
PAGES = PageTemplates(_HERE / "pages")
STATIC = _HERE / "static"
