"""Link hosts that spam filters score, where the sender could pick another host.

``sender templates lint`` warns about each link (the configured ``base_url`` and every
link a template writes) that one of these SpamAssassin URI rules matches. Each rule is
written here to match what SpamAssassin's own definition matches, and names where that
definition lives in Apache SpamAssassin's rules (trunk, 2024):

- ``URI_TRY_3LD`` ("Try it" URI, suspicious hostname): ``rulesrc/sandbox/jhardin/
  20_misc_testing.cf``, published by sa-update in ``72_active.cf``; score 1.999 in all
  four score sets (``rulesrc/scores/72_scores.cf``; it has been 1.0 before). A host
  whose first label *starts* with a call to action (try, start, get, save, check, act,
  compare, join, learn, request, visit, my + letter) followed by at least two more
  labels ending in ``.com`` or ``.net``: ``learn.example.com`` matches,
  ``learning.example.com`` (the rule excepts ``learn`` + ``ing``) and ``learn.example.org``
  do not. The rule's own exceptions (``tryr.codeschool``, ``get.adobe``, ``checkout``,
  ``action``, ``visitor``, ``my`` + ``account``/``support``/..., and ``list-manage`` or
  ``lt.`` in a later label) are kept. The meta rule also stays silent when the message
  carries Errors-To or any ``.edu`` link; a sender should not count on either.
- ``URI_OPTOUT_3LD`` (Opt-out URI, suspicious hostname), the same file: up to 1.999. A
  first label that is exactly an opt-out word (remove, stop, out, exit, ...) and digits,
  in a host of three or more labels ending in ``.com`` or ``.net``.
- ``NUMERIC_HTTP_ADDR`` (a numeric IP address as host) and ``NORMAL_HTTP_TO_IP`` (a public
  dotted-decimal IPv4 address): ``rules/20_uri_tests.cf``, scores in
  ``rules/50_scores.cf``, up to 1.242 and 0.795.
- ``WEIRD_PORT`` (a port other than 80, 443 and 8080): ``rules/20_uri_tests.cf``, up to
  0.097.
- ``__URL_SHORTENER`` (a link through a URL shortener): ``rules/25_url_shortener.cf``. It
  has no score of its own; meta rules use it, ``SHORTENER_SHORT_IMG`` scoring 2.499. Only
  the best-known shorteners of that list are checked here.

Scores are the highest of the rule's four score sets (with or without Bayes and network
tests), as a sender cannot know which one the receiving filter runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["HostRule", "HostWarning", "link_host_warnings"]


@dataclass(frozen=True, slots=True)
class HostRule:
    """One SpamAssassin URI rule a link host can avoid."""

    name: str  # SpamAssassin's rule name
    score: float  # the highest of its scores over SpamAssassin's four score sets
    advice: str  # what to do instead
    scored_as: str = ""  # for a sub-rule without a score: the scored rule that uses it


@dataclass(frozen=True, slots=True)
class HostWarning:
    """A link whose host a SpamAssassin rule matches."""

    url: str
    host: str
    rule: HostRule

    def __str__(self) -> str:
        rule = self.rule
        score = f"+{rule.score:g}" + (f" through {rule.scored_as}" if rule.scored_as else "")
        return f"link host {self.host} matches SpamAssassin's {rule.name} ({score}): {rule.advice}"


# First labels that URI_TRY_3LD reads as a call to action, each with the continuations
# the rule excepts (a negative lookahead right after the word).
_CALLS_TO_ACTION = (
    r"try(?!r\.codeschool)",
    r"start",
    r"get(?!\.adobe)",
    r"save",
    r"check(?!out)",
    r"act(?!ion)",
    r"compare",
    r"join",
    r"learn(?!ing)",
    r"request",
    r"visit(?!or|\.vermont)",
    r"my(?!sub|turbotax|news\.apple|a\.godaddy|account|support|build|blob|images?|photos?)\w",
)
_TRY_3LD = re.compile(
    rf"^https?://(?:{'|'.join(_CALLS_TO_ACTION)})[^.]*\."  # the word, the rest of its label
    r"(?:(?!list-manage|lt\.)[^/.]+\.)+"  # one or more further labels
    r"(?:com|net)\b",
    re.IGNORECASE | re.ASCII,
)
_OPT_OUT_WORDS = (
    "quit|bye|remove|exit|leave|disallow|halt|stop|end|herego|out|discontinue"  # the rule's list
)
_OPTOUT_3LD = re.compile(
    rf"^https?://(?:{_OPT_OUT_WORDS})\d*\.[^/]+\.(?:com|net)\b", re.IGNORECASE | re.ASCII
)
_NUMERIC = re.compile(r"^https?://[\d.]+(?:[:/?#]|$)", re.IGNORECASE | re.ASCII)
# Private and loopback ranges (10/8, 127/8, 169.254/16, 172.16/12, 192.168/16) are excepted.
_PUBLIC_IPV4 = re.compile(
    r"^https?://(?!1(?:0|27|69\.254|72\.(?:1[6-9]|2\d|3[01])|92\.168)\.)"
    r"\d+\.\d+\.\d+\.\d+\b(?![.-])",
    re.IGNORECASE | re.ASCII,
)
_WEIRD_PORT = re.compile(r"https?://[^/?\s]+?:\d+(?<!:80)(?<!:443)(?<!:8080)(?:/|\s|$)", re.ASCII)
# The best-known hosts of SpamAssassin's url_shortener list (25_url_shortener.cf).
_SHORTENERS = frozenset(
    {
        "bit.ly",
        "bitly.com",
        "cutt.ly",
        "goo.gl",
        "is.gd",
        "j.mp",
        "lnkd.in",
        "ow.ly",
        "rb.gy",
        "s.id",
        "shorturl.at",
        "t.co",
        "t.ly",
        "tiny.cc",
        "tinyurl.com",
        "v.gd",
    }
)
_SHORTENER_SUFFIXES = (".page.link", ".app.link")  # any name under these, as the list says

TRY_3LD = HostRule(
    "URI_TRY_3LD",
    1.999,
    "the host's first label starts with a call to action (try, start, get, save, check, "
    "act, compare, join, learn, request, visit, my...) and .com/.net is two or more labels "
    "up; choose another first label (learning.example.com passes where learn.example.com "
    "does not) or link from the domain itself",
)
OPTOUT_3LD = HostRule(
    "URI_OPTOUT_3LD",
    1.999,
    "the host's first label is an opt-out word (remove, stop, out, exit, leave, quit, "
    "...); name the host after the site, not the action",
)
NUMERIC_HTTP_ADDR = HostRule(
    "NUMERIC_HTTP_ADDR",
    1.242,
    "the link names an IP address; give the site a DNS name and link to that",
)
NORMAL_HTTP_TO_IP = HostRule(
    "NORMAL_HTTP_TO_IP",
    0.795,
    "the link names a public IPv4 address; give the site a DNS name and link to that",
)
WEIRD_PORT = HostRule(
    "WEIRD_PORT",
    0.097,
    "the link names a port other than 80, 443 or 8080; serve the links on 443 (https://) "
    "and leave the port out",
)
URL_SHORTENER = HostRule(
    "__URL_SHORTENER",
    2.499,
    "the link goes through a URL shortener, which also hides where it leads; link to the "
    "site itself",
    scored_as="SHORTENER_SHORT_IMG",
)


def link_host_warnings(url: str, /) -> list[HostWarning]:
    """The rules above that ``url`` (an http or https link) matches; [] for other links.

    A link written ``www.example.com/...`` is read as ``http://`` first, as SpamAssassin
    reads it.
    """
    url = url.strip()
    if url[:4].lower() == "www.":
        url = "http://" + url
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return []  # the single-link rule reports an unreadable link
    if parts.scheme.lower() not in ("http", "https") or not host:
        return []
    rules = []
    if _TRY_3LD.search(url):
        rules.append(TRY_3LD)
    if _OPTOUT_3LD.search(url):
        rules.append(OPTOUT_3LD)
    if _NUMERIC.search(url):
        rules.append(NUMERIC_HTTP_ADDR)
    if _PUBLIC_IPV4.search(url):
        rules.append(NORMAL_HTTP_TO_IP)
    if _WEIRD_PORT.search(url):
        rules.append(WEIRD_PORT)
    if host in _SHORTENERS or host.endswith(_SHORTENER_SUFFIXES):
        rules.append(URL_SHORTENER)
    return [HostWarning(url, host, rule) for rule in rules]
