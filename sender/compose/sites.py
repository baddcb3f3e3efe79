"""What a "site" is, and which redirect targets are safe.

The single-link rule compares sites (registrable domains, from the Public
Suffix List), and login links carry a ``next`` path that must never lead
off-site. Both questions live here; this is the only module that imports
publicsuffixlist.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from publicsuffixlist import PublicSuffixList

from sender.addresses import bare_domain
from sender.errors import UnsafePathError

__all__ = ["MAX_NEXT_LENGTH", "check_next_path", "host_of", "site_of"]

MAX_NEXT_LENGTH = 512
_PSL = PublicSuffixList()
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0 and C1 controls: browsers strip some
_WHITESPACE = re.compile(r"\s")
# Solidus and reverse-solidus lookalikes NFKC leaves alone (it folds the fullwidth and
# small forms itself); some URL parsers and fonts treat them as path separators.
_SLASH_LOOKALIKES = re.compile(
    "[\u2044\u2215\u2216\u2571\u2572\u29f5\u29f8\u29f9\ufe68\uff0f\uff3c]"
)


@lru_cache(maxsize=4096)
def site_of(host: str, /) -> str:
    """The registrable domain of ``host`` (``www.lms.example.co.uk`` → ``example.co.uk``).

    IP literals and single-label hosts (``localhost``) are their own site.
    """
    host = bare_domain(host)
    if host.startswith("[") and host.endswith("]"):
        return host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return host
    return _PSL.privatesuffix(host) or host


def host_of(url: str, /) -> str | None:
    """The host of an absolute or scheme-relative URL, or None when it has none."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _forms(path: str) -> list[str]:
    """``path`` as written, percent-decoded, NFKC-normalized, and both, without repeats.

    Browsers and frameworks apply any of these before they redirect, so each
    form must be safe on its own.
    """
    forms: list[str] = []
    for text in (path, unicodedata.normalize("NFKC", path)):
        decoded = text
        for _ in range(3):  # %252F decodes twice; three rounds catch any realistic nesting
            decoded = unquote(decoded)
        for form in (text, decoded, unicodedata.normalize("NFKC", decoded)):
            if form not in forms:
                forms.append(form)
    return forms


def _has_dot_segment(path: str) -> bool:
    """True when the path part has a ``.`` or ``..`` segment (``..;x`` counts, as in Tomcat)."""
    for stop in "?#":
        path = path.partition(stop)[0]
    return any(segment.partition(";")[0] in (".", "..") for segment in path.split("/"))


def check_next_path(path: str, /) -> str:
    """Return ``path`` if it is a same-site relative path; raise :class:`UnsafePathError`.

    Browsers treat ``//host``, ``/\\host``, ``\\\\host`` and ``https:...`` as
    off-site, and some frameworks decode ``%2F``, apply NFKC (which turns a
    fullwidth solidus U+FF0F into ``/``), resolve dot segments (``/.//host`` becomes
    ``//host``) or strip controls before redirecting. So the path is checked
    as written and in each of those forms, and dot segments and slash
    lookalikes are refused outright.
    """
    if not path:
        raise UnsafePathError("the next path is empty", field="next")
    if len(path) > MAX_NEXT_LENGTH:
        raise UnsafePathError(
            f"the next path is longer than {MAX_NEXT_LENGTH} characters", field="next"
        )
    forms = _forms(path)
    if _WHITESPACE.search(path) or _WHITESPACE.search(unicodedata.normalize("NFKC", path)):
        raise UnsafePathError(
            "the next path contains raw whitespace; percent-encode it", field="next"
        )
    for candidate in forms:
        if _CONTROL.search(candidate):
            raise UnsafePathError("the next path contains control characters", field="next")
        if "\\" in candidate:
            raise UnsafePathError("the next path contains a backslash", field="next")
        if _SLASH_LOOKALIKES.search(candidate):
            raise UnsafePathError(
                "the next path contains a character that looks like a slash", field="next"
            )
        if not candidate.startswith("/") or candidate.startswith("//"):
            raise UnsafePathError(
                "the next path must start with a single '/' (a path on this site)", field="next"
            )
        if _has_dot_segment(candidate):
            raise UnsafePathError(
                "the next path contains a '.' or '..' segment; give the path it leads to",
                field="next",
            )
        parts = urlsplit(candidate)
        if parts.scheme or parts.netloc:
            raise UnsafePathError("the next path must not name a scheme or host", field="next")
    return path
