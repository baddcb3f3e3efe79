"""The sender-domain doctor: SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT, BIMI, PTR and streams.

:func:`diagnose` asks DNS (through :class:`sender.checks.resolve.Resolver`) what receivers will
see for a sending domain and returns a :class:`DoctorReport`: one :class:`Check` per
question, each with a plain message and, when something is missing or wrong, the exact
records to publish as :class:`Fix` values, printable as BIND zone-file lines
(:meth:`Fix.bind`, names always ending in a dot) or as host/type/value for web DNS
consoles (:meth:`Fix.console`).

The checks, by name:

``spf``
    exactly one ``v=spf1`` TXT record (RFC 7208 §3.2) that authorizes the provider,
    directly or through nested includes (or ``redirect=``); include targets must have
    one SPF record themselves.
``spf-lookups``
    at most 10 DNS-querying terms (``include a mx ptr exists redirect``), counted
    recursively (§4.6.4); include loops fail here.
``spf-void``
    at most 2 lookups that come back empty (§4.6.4).
``spf-all``
    the record ends in ``~all`` or ``-all`` (through ``redirect=`` if it has no ``all``).
``dkim``
    ``<selector>._domainkey.<domain>`` holds a parseable public key, and the key sender
    signs with when one is given. Without a selector this check is **ok** with a
    message saying it was not checked: DKIM is optional to sending, and the report
    should not fail for a question nobody asked.
``dmarc``
    a ``v=DMARC1`` record at ``_dmarc.<domain>`` (or, for a subdomain, at the
    organizational domain, RFC 7489 §6.6.3); its policy is reported.
``dmarc-alignment``
    SPF or DKIM passes *and* its domain lines up with the From domain, relaxed or strict
    (``aspf``/``adkim``). SPF counts only when SPF itself passes for the SPF domain (the
    bounce domain if given, whose SPF is then checked too): the record authorizes the
    provider, within the lookup limits. DKIM counts when the key at ``d=`` the domain
    works. Fails when neither aligns; unknown when DNS did not answer for the one that
    might.
``dmarc-tags``
    DMARC's ``np=`` (RFC 9989: the policy for subdomains that do not exist; without it
    they get ``sp=``, then ``p=``): a warning when it lets made-up subdomains through
    under an enforcing ``p=``, or is not a policy. A warning too for the tags RFC 9989
    removed (``pct``, ``rf``, ``ri``: :data:`REMOVED_DMARC_TAGS`; ``t=y`` took over
    ``pct``'s testing role); the fix is the record without them.
``mx-bounce``, ``mx-reply``
    the bounce domain and the reply domain (when given) accept mail: an MX that is not
    a null MX (RFC 7505).
``mta-sts``
    ``_mta-sts.<domain>`` holds one ``v=STSv1; id=...`` record, its policy
    (:mod:`sender.checks.mtasts`) is served and valid, and every MX matches one of its
    ``mx:`` patterns. No record, ``mode: testing``/``none``, or a ``max_age`` under a day
    warns.
``tls-rpt``
    ``_smtp._tls.<domain>`` holds one ``v=TLSRPTv1`` record with a ``mailto:`` or
    ``https:`` ``rua=``. No record warns.
``bimi``
    when ``default._bimi.<domain>`` has a record: ``v=BIMI1``, an ``https://`` SVG logo
    (``l=``), an ``https://`` certificate (``a=``; without it, a warning) and DMARC
    ``p=quarantine`` or ``p=reject``, without which no logo is shown.
``ptr:<ip>``
    for each sending IP: a PTR record whose name resolves back to the IP (A for IPv4,
    AAAA for IPv6): forward-confirmed reverse DNS, which Gmail requires of every sender.
``stream:<name>``
    for each :class:`StreamIdentity` (:func:`stream_checks`): the stream signs with DKIM
    (a warning if not), its key is published under its selector, its DKIM domain aligns
    with its From domain (``adkim``), and its From domain has DMARC.

A check marked ``advisory`` is a recommendation: when it is not ok the doctor prints
``warn`` and the report stays ok. Every other check that is not ok fails the report.
Each fix is a :class:`Fix`: a BIND line and the console host/type/value.

When DNS does not answer (timeout, SERVFAIL) a check is ``unknown``: not ok, but not
a definite failure either. Every walk over DNS is bounded in depth and in lookups.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from sender.addresses import bare_domain
from sender.checks.mtasts import (
    HttpsPolicyFetcher,
    PolicyFetcher,
    mx_matches,
    parse_policy,
    policy_url,
)
from sender.checks.resolve import Answer, LookupStatus, Resolver
from sender.compose.dkim import dns_public_key, public_key_of
from sender.compose.sites import site_of
from sender.errors import ConfigurationError

__all__ = [
    "REMOVED_DMARC_TAGS",
    "Check",
    "DoctorReport",
    "Fix",
    "StreamIdentity",
    "diagnose",
    "stream_checks",
]

SPF_LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4
SPF_VOID_LIMIT = 2  # RFC 7208 §4.6.4
_MAX_DEPTH = 10  # include/redirect nesting we follow
_MAX_RECORDS = 40  # SPF records we read in one walk
_MAX_RESOLVED = 60  # a/mx/exists lookups we make in one walk
_MAX_TERMS = 100  # terms we read from one record
_TXT_CHUNK = 255  # bytes in one TXT character-string
_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_ALL_WORDS = {
    "+": "+all lets every server on the internet send as you",
    "?": "?all says nothing about other servers, so forged mail is not stopped",
}


def _fqdn(name: str) -> str:
    return bare_domain(name) + "."


@dataclass(frozen=True, slots=True)
class Fix:
    """One DNS record to publish (replacing any record of that type it supersedes).

    ``origin`` is the domain the console host is relative to (the diagnosed domain);
    a name outside it is given whole in :meth:`console`.
    """

    name: str  # fully qualified, ending in a dot: "learning.example.com."
    rdtype: str  # "TXT", "MX", ...
    value: str  # "v=spf1 include:amazonses.com ~all", "10 mail.example.com."
    origin: str = ""

    def bind(self) -> str:
        """The BIND zone-file line; TXT values quoted and split into <=255-byte strings."""
        value = self.value
        if self.rdtype.upper() == "TXT":
            value = " ".join(f'"{_escape(chunk)}"' for chunk in _chunks(self.value))
        return f"{_fqdn(self.name)} IN {self.rdtype.upper()} {value}"

    def console(self) -> dict[str, str]:
        """Host (relative to ``origin``: ``@``, ``_dmarc``, ``s1._domainkey``), type, value."""
        name = bare_domain(self.name)
        origin = bare_domain(self.origin)
        if origin and name == origin:
            host = "@"
        elif origin and name.endswith("." + origin):
            host = name[: -len(origin) - 1]
        else:
            host = name
        return {"host": host, "type": self.rdtype.upper(), "value": self.value}


def _chunks(value: str) -> list[str]:
    """``value`` in pieces of at most 255 UTF-8 bytes, never splitting a character."""
    chunks: list[str] = []
    current = ""
    size = 0
    for char in value:
        width = len(char.encode("utf-8"))
        if size + width > _TXT_CHUNK:
            chunks.append(current)
            current, size = "", 0
        current += char
        size += width
    chunks.append(current)
    return chunks


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True, slots=True)
class Check:
    """One question about the domain, answered in one plain line."""

    name: str  # "spf", "spf-lookups", "spf-void", "spf-all", "dkim", "dmarc", ...
    ok: bool
    message: str
    fixes: tuple[Fix, ...] = ()
    unknown: bool = False  # DNS did not answer: neither a pass nor a definite fail
    advisory: bool = False  # recommended, not required: a failure warns, the report stays ok

    @property
    def mark(self) -> str:
        """``ok``, ``FAIL``, ``??`` (DNS did not answer) or ``warn`` (advisory, not ok)."""
        if self.ok and not self.unknown:
            return "ok"
        if self.advisory:
            return "warn"
        return "??" if self.unknown else "FAIL"


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Every check made for ``domain``, in a stable order."""

    domain: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """Whether every check passed (an unknown check is not a pass; advisories never fail)."""
        return all(check.advisory or (check.ok and not check.unknown) for check in self.checks)

    def to_json(self) -> dict[str, object]:
        """Plain data for ``--json``: the checks with their fixes in both forms."""
        return {
            "domain": self.domain,
            "ok": self.ok,
            "checks": [
                {
                    "name": check.name,
                    "ok": check.ok,
                    "unknown": check.unknown,
                    "advisory": check.advisory,
                    "mark": check.mark,
                    "message": check.message,
                    "fixes": [
                        {
                            "name": fix.name,
                            "type": fix.rdtype,
                            "value": fix.value,
                            "bind": fix.bind(),
                            "console": fix.console(),
                        }
                        for fix in check.fixes
                    ],
                }
                for check in self.checks
            ],
        }


async def diagnose(
    domain: str,
    /,
    *,
    resolver: Resolver,
    spf_include: str = "amazonses.com",
    dkim_selector: str | None = None,
    dkim_private_key: bytes | None = None,
    bounce_domain: str | None = None,
    reply_domain: str | None = None,
    sending_ips: Sequence[str] = (),
    streams: Sequence[StreamIdentity] = (),
    fetch_policy: PolicyFetcher | None = None,
) -> DoctorReport:
    """Check ``domain`` as a sender domain; see the module docstring for the checks.

    ``sending_ips``: the IPs mail leaves from, for the PTR checks. ``streams``: the From
    and DKIM identities to check (:func:`stream_checks`). ``fetch_policy`` fetches the
    MTA-STS policy (default: :class:`~sender.checks.mtasts.HttpsPolicyFetcher`).
    """
    domain = _domain(domain, "domain")
    provider = _domain(spf_include.removeprefix("include:"), "spf_include")
    bounce = _domain(bounce_domain, "bounce_domain") if bounce_domain else None
    reply = _domain(reply_domain, "reply_domain") if reply_domain else None
    selector = dkim_selector.strip().strip(".").lower() if dkim_selector else None
    ips = [_ip(ip) for ip in sending_ips]
    fetch = fetch_policy if fetch_policy is not None else HttpsPolicyFetcher()
    spf_domain = bounce or domain  # SPF is checked for the envelope sender's domain
    spf, bounce_spf, dkim, dmarc, mx_bounce, mx_reply = await asyncio.gather(
        _spf_checks(resolver, domain, provider),
        _spf_checks(resolver, spf_domain, provider) if spf_domain != domain else _nothing(),
        _dkim_check(resolver, domain, selector, dkim_private_key),
        _dmarc_lookup(resolver, domain),
        _mx_check(resolver, "mx-bounce", "bounce", bounce, domain),
        _mx_check(resolver, "mx-reply", "reply", reply, domain),
    )
    dmarc_check, dmarc_tags, dmarc_where, dmarc_record = dmarc
    mta_sts, tls_rpt, bimi, ptrs, stream_results = await asyncio.gather(
        _mta_sts_check(resolver, domain, fetch),
        _tls_rpt_check(resolver, domain),
        _bimi_check(resolver, domain, dmarc_tags),
        _ptr_checks(resolver, ips, domain),
        stream_checks(resolver, streams, domain=domain),
    )
    alignment = _alignment_check(
        domain,
        spf_domain,
        _spf_verdict(bounce_spf or spf),
        dmarc_tags,
        dkim if selector else None,
    )
    checks = [*spf, dkim, dmarc_check, alignment]
    checks.append(_dmarc_tags_check(domain, dmarc_where, dmarc_record, dmarc_tags))
    checks += [check for check in (mx_bounce, mx_reply) if check is not None]
    checks += [mta_sts, tls_rpt, bimi, *ptrs, *stream_results]
    return DoctorReport(domain, tuple(checks))


def _domain(value: str, setting: str) -> str:
    name = bare_domain(value)
    labels = name.split(".")
    if not name or any(not label or len(label) > 63 for label in labels) or len(name) > 253:
        raise ConfigurationError(f"{value!r} is not a domain name", setting=setting)
    if any(char.isspace() or char in "@/\\:" for char in name):
        raise ConfigurationError(f"{value!r} is not a domain name", setting=setting)
    return name


async def _nothing() -> list[Check]:
    return []


def _unknown(name: str, what: str) -> Check:
    return Check(name, False, f"DNS did not answer for {what}; try again.", unknown=True)


def _optional(check: Check) -> Check:
    """``check`` as a recommendation: not ok warns, and the report stays ok."""
    return Check(check.name, check.ok, check.message, check.fixes, check.unknown, advisory=True)


# --- SPF ------------------------------------------------------------------------------


def _is_spf(text: str) -> bool:
    return text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")


def _term(term: str) -> tuple[str, str, str]:
    """``(qualifier, name, argument)`` of one SPF term; modifiers have qualifier ``=``."""
    name, sep, arg = term.partition("=")
    if sep and name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        return "=", name.lower(), arg
    qualifier = "+"
    if term[:1] in "+-~?":
        qualifier, term = term[0], term[1:]
    name, _, arg = term.partition(":")
    return qualifier, name.partition("/")[0].lower(), arg.partition("/")[0]


@dataclass(slots=True)
class _SpfWalk:
    """What a walk through one domain's SPF records found."""

    resolver: Resolver
    provider: str
    lookups: int = 0
    records: int = 0
    resolved: int = 0
    truncated: bool = False
    via: str | None = None  # how the provider is authorized
    loop: str | None = None
    voids: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    top_voids: set[str] = field(default_factory=set)  # top-level terms that came back empty
    alls: dict[str, str] = field(default_factory=dict)  # domain -> all qualifier
    redirects: dict[str, str] = field(default_factory=dict)  # domain -> redirect target

    async def visit(self, domain: str, record: str, chain: tuple[str, ...]) -> None:
        self.records += 1
        terms = record.split()[1 : 1 + _MAX_TERMS]
        has_all = any(_term(t)[1] == "all" and _term(t)[0] != "=" for t in terms)
        for term in terms:
            qualifier, name, arg = _term(term)
            if qualifier == "=":
                if name == "redirect" and not has_all:
                    self.redirects[domain] = bare_domain(arg)
                    await self._follow(term, arg, chain)
                continue
            if name == "all":
                self.alls[domain] = qualifier
            elif name == "include":
                await self._follow(term, arg, chain)
            elif name in ("a", "mx", "ptr", "exists"):
                self.lookups += 1
                empty = await self._probe(name, arg or domain)
                if empty:
                    self.voids.append(term)
                    if len(chain) == 1:
                        self.top_voids.add(term)
            elif name not in _MECHANISMS:
                self.broken.append(f"{domain} has the unknown term {term!r}")

    async def _follow(self, term: str, target: str, chain: tuple[str, ...]) -> None:
        self.lookups += 1
        target = bare_domain(target)
        if not target or "%" in target:
            return  # a macro: it depends on the sending server, so we cannot follow it
        if target == self.provider and self.via is None:
            self.via = (
                "directly"
                if len(chain) == 1
                else "through " + " → ".join(f"include:{d}" for d in (*chain[1:], target))
            )
        if target in chain:
            self.loop = self.loop or " → ".join((*chain, target))
            return
        if len(chain) > _MAX_DEPTH or self.records >= _MAX_RECORDS:
            self.truncated = True
            return
        answer = await self.resolver.lookup(target, "TXT")
        if not answer.settled:
            self.unknown.append(target)
            return
        spf = [r for r in answer.records if _is_spf(r)]
        if answer.status is not LookupStatus.OK:
            self.voids.append(term)
        if len(spf) != 1:
            how = "no SPF record" if not spf else f"{len(spf)} SPF records"
            self.broken.append(f"{term} points at {target}, which has {how}")
            return
        await self.visit(target, spf[0], (*chain, target))

    async def _probe(self, name: str, target: str) -> bool:
        """Whether the lookup a mechanism makes comes back empty (a void lookup)."""
        target = bare_domain(target)
        if name == "ptr" or "%" in target or self.resolved >= _MAX_RESOLVED:
            return False  # depends on the sending server, or past our budget
        types = {"a": ("A", "AAAA"), "mx": ("MX",), "exists": ("A",)}[name]
        for rdtype in types:
            self.resolved += 1
            answer = await self.resolver.lookup(target, rdtype)
            if not answer.settled:
                self.unknown.append(target)
                return False
            if answer.records:
                return False
        return True

    def final_all(self, domain: str) -> str | None:
        """The ``all`` qualifier that ends evaluation at ``domain``, following redirects."""
        for _ in range(_MAX_DEPTH + 1):
            if domain in self.alls:
                return self.alls[domain]
            if domain not in self.redirects:
                return None
            domain = self.redirects[domain]
        return None


def _corrected_spf(records: list[str], provider: str | None, drop: set[str]) -> str:
    """One record merging ``records``: the provider included, voids dropped, ending ~all."""
    terms: list[str] = []
    seen: set[str] = set()
    alls: list[str] = []
    redirect: str | None = None
    for record in sorted(records):  # DNS gives records in no particular order
        for term in record.split()[1 : 1 + _MAX_TERMS]:
            qualifier, name, _ = _term(term)
            if qualifier != "=" and name == "all":
                alls.append(qualifier)
            elif qualifier == "=" and name == "redirect":
                redirect = redirect or term
            elif term not in drop and term.lower() not in seen:
                seen.add(term.lower())
                terms.append(term)
    if provider is not None and f"include:{provider}" not in seen:
        terms.append(f"include:{provider}")
    if alls or redirect is None:
        terms.append("-all" if "-" in alls else "~all")
    else:
        terms.append(redirect)
    return " ".join(["v=spf1", *terms])


async def _spf_checks(resolver: Resolver, domain: str, provider: str) -> list[Check]:
    answer = await resolver.lookup(domain, "TXT")
    if not answer.settled:
        return [_unknown("spf", f"the TXT records of {domain}")]
    records = [r for r in answer.records if _is_spf(r)]
    fix_at = _fqdn(domain)
    if not records:
        value = f"v=spf1 include:{provider} ~all"
        message = (
            f"{domain} has no SPF record, so receivers cannot tell your mail from forgeries; "
            f"add one that allows {provider}."
        )
        return [Check("spf", False, message, (Fix(fix_at, "TXT", value, fix_at),))]
    if len(records) > 1:
        value = _corrected_spf(records, provider, set())
        message = (
            f"There are {len(records)} SPF records at {domain}; receivers treat that as no "
            "SPF at all (RFC 7208 3.2). Keep one: replace them with the merged record."
        )
        return [Check("spf", False, message, (Fix(fix_at, "TXT", value, fix_at),))]

    walk = _SpfWalk(resolver, provider)
    await walk.visit(domain, records[0], (domain,))
    corrected = _corrected_spf(
        records,
        None if walk.via else provider,
        walk.top_voids if len(walk.voids) > SPF_VOID_LIMIT else set(),
    )
    fixes = () if corrected == records[0] else (Fix(fix_at, "TXT", corrected, fix_at),)
    checks: list[Check] = []

    # spf: one record that authorizes the provider
    if walk.broken:
        message = f"SPF for {domain} is broken: {walk.broken[0]}, so receivers give a PermError."
        checks.append(Check("spf", False, message))
    elif walk.via:
        checks.append(Check("spf", True, f"SPF for {domain} allows {provider} {walk.via}."))
    elif walk.unknown:
        checks.append(_unknown("spf", ", ".join(sorted(set(walk.unknown)))))
    else:
        message = (
            f"The SPF record of {domain} does not include {provider}, so mail sent through "
            f"it fails SPF; add include:{provider}."
        )
        checks.append(Check("spf", False, message, fixes))

    # spf-lookups: at most 10 DNS-querying terms, no loops
    if walk.loop:
        message = (
            f"SPF includes loop ({walk.loop}); receivers give a PermError. "
            "Remove the include that points back."
        )
        checks.append(Check("spf-lookups", False, message))
    elif walk.lookups > SPF_LOOKUP_LIMIT:
        at_least = "at least " if walk.truncated or walk.unknown else ""
        message = (
            f"SPF for {domain} needs {at_least}{walk.lookups} DNS lookups; receivers stop "
            f"at {SPF_LOOKUP_LIMIT} and fail SPF (RFC 7208 4.6.4). Remove includes you no "
            "longer use, or replace a:/mx: with ip4:/ip6:."
        )
        checks.append(Check("spf-lookups", False, message))
    elif walk.truncated:
        message = f"SPF for {domain} nests deeper than {_MAX_DEPTH} includes; flatten it."
        checks.append(Check("spf-lookups", False, message))
    elif walk.unknown:
        checks.append(_unknown("spf-lookups", ", ".join(sorted(set(walk.unknown)))))
    else:
        message = (
            f"SPF for {domain} needs {walk.lookups} of the {SPF_LOOKUP_LIMIT} DNS lookups allowed."
        )
        checks.append(Check("spf-lookups", True, message))

    # spf-void: at most 2 lookups that find nothing
    if len(walk.voids) > SPF_VOID_LIMIT:
        message = (
            f"SPF for {domain} has {len(walk.voids)} terms that find nothing in DNS "
            f"({', '.join(walk.voids)}); receivers fail SPF after {SPF_VOID_LIMIT} "
            "(RFC 7208 4.6.4). Remove them."
        )
        void_fixes = fixes if walk.top_voids else ()
        checks.append(Check("spf-void", False, message, void_fixes))
    elif walk.unknown:
        checks.append(_unknown("spf-void", ", ".join(sorted(set(walk.unknown)))))
    else:
        message = f"SPF for {domain} has {len(walk.voids)} terms that find nothing (at most 2)."
        checks.append(Check("spf-void", True, message))

    # spf-all: the record ends by refusing or marking everyone else
    qualifier = walk.final_all(domain)
    if qualifier in ("~", "-"):
        checks.append(Check("spf-all", True, f"SPF for {domain} ends in {qualifier}all."))
    elif qualifier is None and domain in walk.redirects and walk.unknown:
        checks.append(_unknown("spf-all", walk.redirects[domain]))
    else:
        words = _ALL_WORDS.get(qualifier or "") or (
            "it has no all term, so mail from other servers is merely 'neutral'"
        )
        message = (
            f"The SPF record of {domain} does not end in ~all or -all: {words}. End it with ~all."
        )
        checks.append(Check("spf-all", False, message, fixes))
    return checks


# --- DKIM -----------------------------------------------------------------------------


def _tags(record: str) -> dict[str, str]:
    """``k=v; k=v`` tags (DKIM, DMARC); keys lowercased, whitespace around values gone."""
    tags: dict[str, str] = {}
    for part in record.split(";")[:_MAX_TERMS]:
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    return tags


async def _dkim_check(
    resolver: Resolver, domain: str, selector: str | None, private_key: bytes | None
) -> Check:
    if selector is None:
        return Check("dkim", True, "DKIM not checked: give --dkim-selector.")
    name = f"{selector}._domainkey.{domain}"
    fix_at = _fqdn(name)
    own: tuple[str, bytes] | None = None
    if private_key is not None:
        own = public_key_of(private_key)
        if own is None:
            return Check(
                "dkim", False, "The DKIM private key could not be read (PEM, no password)."
            )
    own_fix: tuple[Fix, ...] = ()
    if own is not None:
        kind, public = own
        value = f"v=DKIM1; k={kind}; p={base64.b64encode(public).decode('ascii')}"
        own_fix = (Fix(fix_at, "TXT", value, _fqdn(domain)),)
    answer = await resolver.lookup(name, "TXT")
    if not answer.settled:
        return _unknown("dkim", name)
    records = [r for r in answer.records if "p=" in r]
    if not records:
        message = (
            f"No DKIM key is published at {name}, so receivers cannot verify your signatures; "
            + (
                "publish the key below."
                if own_fix
                else "publish the public key of selector " + selector + "."
            )
        )
        return Check("dkim", False, message, own_fix)
    if len(records) > 1:
        message = (
            f"There are {len(records)} DKIM keys at {name}; receivers may pick either. Keep one."
        )
        return Check("dkim", False, message, own_fix)
    tags = _tags(records[0])
    if tags.get("v", "DKIM1") != "DKIM1":
        message = f"The DKIM record at {name} has v={tags['v']}; it must be v=DKIM1."
        return Check("dkim", False, message, own_fix)
    p = "".join(tags.get("p", "").split())
    if not p:
        message = f"The DKIM key at {name} is revoked (empty p=); mail signed with it fails DKIM."
        return Check("dkim", False, message, own_fix)
    kind = tags.get("k", "rsa").lower()
    try:
        raw = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    key, why = dns_public_key(kind, raw) if raw else (None, "p= is not base64")
    if key is None:
        message = f"The DKIM key at {name} cannot be used: {why}. Publish the key again."
        return Check("dkim", False, message, own_fix)
    if own is not None and own != (kind, key):
        message = (
            f"The DNS key at {name} is not the key sender signs with, so every signature "
            "fails; publish the key below."
        )
        return Check("dkim", False, message, own_fix)
    checked = " and matches the signing key" if own is not None else ""
    return Check("dkim", True, f"DKIM key at {name} is a valid {kind} key{checked}.")


# --- DMARC ----------------------------------------------------------------------------

_POLICY_WORDS = {
    "none": "monitoring only: receivers report failures but deliver as usual",
    "quarantine": "receivers put mail that fails in spam",
    "reject": "receivers refuse mail that fails",
}


def _dmarc_records(answer: Answer) -> list[str]:
    return [r for r in answer.records if r.split(";", 1)[0].replace(" ", "").upper() == "V=DMARC1"]


async def _dmarc_lookup(
    resolver: Resolver, domain: str
) -> tuple[Check, dict[str, str], str, str | None]:
    """The dmarc check, the record's tags, where it was found and the record itself."""
    name = f"_dmarc.{domain}"
    answer = await resolver.lookup(name, "TXT")
    if not answer.settled:
        return _unknown("dmarc", name), {}, name, None
    records = _dmarc_records(answer)
    where, subdomain = name, False
    org = site_of(domain)
    if not records and org != domain:  # RFC 7489 6.6.3: fall back to the organizational domain
        org_answer = await resolver.lookup(f"_dmarc.{org}", "TXT")
        if not org_answer.settled:
            return _unknown("dmarc", f"_dmarc.{org}"), {}, f"_dmarc.{org}", None
        records = _dmarc_records(org_answer)
        where, subdomain = f"_dmarc.{org}", bool(records)
    if not records:
        fix = Fix(_fqdn(name), "TXT", f"v=DMARC1; p=none; rua=mailto:dmarc@{domain}", _fqdn(domain))
        message = (
            f"{domain} has no DMARC record; add one with p=none first (monitoring: receivers "
            "send reports, delivery is unchanged), then tighten to quarantine."
        )
        return Check("dmarc", False, message, (fix,)), {}, name, None
    if len(records) > 1:
        message = (
            f"There are {len(records)} DMARC records at {where}; receivers ignore all. Keep one."
        )
        return Check("dmarc", False, message), {}, where, None
    tags = _tags(records[0])
    policy = tags.get("sp", tags.get("p", "")) if subdomain else tags.get("p", "")
    policy = policy.lower()
    if policy not in _POLICY_WORDS:
        message = f"The DMARC record at {where} has no valid policy (p=none, quarantine or reject)."
        return Check("dmarc", False, message), tags, where, records[0]
    shown = [f"p={tags.get('p', '')}"] + [f"{t}={tags[t]}" for t in ("sp", "pct") if t in tags]
    inherited = f" (inherited from {site_of(domain)})" if subdomain else ""
    message = f"DMARC at {where}{inherited}: {' '.join(shown)}; {_POLICY_WORDS[policy]}."
    if tags.get("pct", "100") != "100":
        message = message[:-1] + f", for {tags['pct']}% of failing mail."
    return Check("dmarc", True, message), tags, where, records[0]


_SPF_PASSES = frozenset({"spf", "spf-lookups", "spf-void"})  # what makes SPF itself pass


def _spf_verdict(checks: list[Check]) -> tuple[bool | None, Check | None]:
    """Whether SPF passes for mail through the provider (None: unknown), and the check why not.

    It passes when the record authorizes the provider and receivers can evaluate it
    (no PermError from too many lookups or void lookups); ``spf-all`` is advice only.
    """
    relevant = [check for check in checks if check.name in _SPF_PASSES]
    for check in relevant:
        if not check.ok and not check.unknown:
            return False, check
    for check in relevant:
        if check.unknown:
            return None, check
    return bool(relevant), None


def _alignment_check(
    domain: str,
    spf_domain: str,
    spf: tuple[bool | None, Check | None],
    tags: dict[str, str],
    dkim: Check | None,
) -> Check:
    """DMARC alignment: a mechanism aligns only if it passes *and* its domain lines up."""
    spf_strict = tags.get("aspf", "r").lower() == "s"
    dkim_strict = tags.get("adkim", "r").lower() == "s"
    spf_lines_up = spf_domain == domain if spf_strict else site_of(spf_domain) == site_of(domain)
    spf_mode = "strict" if spf_strict else "relaxed"
    dkim_mode = "strict" if dkim_strict else "relaxed"
    spf_passes, spf_why = spf
    spf_aligned = spf_lines_up and spf_passes is True
    spf_unknown = spf_lines_up and spf_passes is None
    if not spf_lines_up:
        spf_part = f"SPF does not align: bounce domain {spf_domain} vs From {domain} ({spf_mode})"
    elif spf_passes is None:
        spf_part = f"SPF alignment unknown: SPF for {spf_domain} could not be checked"
    elif not spf_passes:
        spf_part = f"SPF does not align: SPF for {spf_domain} does not pass"
    else:
        spf_part = f"SPF aligns ({spf_domain}, {spf_mode})"
    if dkim is None:
        dkim_part, dkim_aligned, dkim_unknown = "DKIM not checked (no selector)", False, False
    else:  # sender signs with d= the From domain, so DKIM aligns whenever the key works
        dkim_aligned, dkim_unknown = dkim.ok, dkim.unknown
        dkim_part = (
            f"DKIM aligns (d={domain}, {dkim_mode})"
            if dkim.ok
            else "DKIM does not pass, so it cannot align"
        )
    message = f"DMARC alignment: {spf_part}; {dkim_part}."
    if spf_aligned or dkim_aligned:
        return Check("dmarc-alignment", True, message)
    if dkim_unknown or spf_unknown:
        return Check("dmarc-alignment", False, message, unknown=True)
    fixes: tuple[Fix, ...] = ()
    if spf_lines_up and spf_domain == domain:
        advice = " Make SPF pass first (see the spf checks)."
    elif spf_lines_up and spf_why is not None:  # the bounce domain's SPF: shown only here
        advice = f" {spf_why.message}"
        fixes = spf_why.fixes
    else:
        advice = f" Use a bounce domain under {domain}" + (" or aspf=r." if spf_strict else ".")
    if dkim is None:
        advice += " Or set up DKIM."
    return Check("dmarc-alignment", False, message + advice, fixes)


# --- MX -------------------------------------------------------------------------------


async def _mx_check(
    resolver: Resolver, name: str, role: str, target: str | None, domain: str
) -> Check | None:
    if target is None:
        return None
    answer = await resolver.lookup(target, "MX")
    if not answer.settled:
        return _unknown(name, f"the MX of {target}")
    fix = (Fix(_fqdn(target), "MX", f"10 mail.{domain}.", _fqdn(domain)),)
    hosts = [r.split()[-1] for r in answer.records if r.split()]
    if hosts and all(host == "." for host in hosts):
        message = (
            f"The {role} domain {target} has a null MX (RFC 7505): it refuses all mail, so "
            f"{role} messages are lost. Replace it with an MX for your mail server (example)."
        )
        return Check(name, False, message, fix)
    if not hosts:
        why = "does not exist" if answer.status is LookupStatus.NXDOMAIN else "has no MX record"
        message = (
            f"The {role} domain {target} {why}, so {role} messages cannot reach you; "
            "add an MX for your mail server (example)."
        )
        return Check(name, False, message, fix)
    return Check(name, True, f"The {role} domain {target} accepts mail ({', '.join(hosts)}).")


# --- DMARC tags: np (RFC 9989) and the tags RFC 9989 removed ---------------------------

# RFC 9989 (DMARCbis, which obsoletes RFC 7489) dropped these; its receivers ignore them.
# pct's testing role went to t=y.
REMOVED_DMARC_TAGS = ("pct", "rf", "ri")


def _dmarc_tags_check(domain: str, where: str, record: str | None, tags: dict[str, str]) -> Check:
    """np= for non-existent subdomains, and tags that RFC 9989 removed (advisory)."""
    if record is None:
        return Check("dmarc-tags", True, "No DMARC record to read tags from (see dmarc).")
    org = where.removeprefix("_dmarc.")
    policy = tags.get("p", "").lower()
    np = tags.get("np", "").lower()
    effective = np or tags.get("sp", "").lower() or policy
    removed = [tag for tag in REMOVED_DMARC_TAGS if tag in tags]
    problems: list[str] = []
    if np and np not in _POLICY_WORDS:
        problems.append(f"np={np} is not none, quarantine or reject, so receivers ignore it")
    elif policy in ("quarantine", "reject") and effective == "none":
        source = "np" if np else "sp"
        problems.append(
            f"non-existent subdomains of {org} fall under {source}=none, so forged mail from "
            f"made-up names like x1.{org} is delivered; add np=reject (RFC 9989)"
        )
    if removed:
        words = ", ".join(f"{tag}={tags[tag]}" for tag in removed)
        problems.append(
            f"{words}: RFC 9989 removed pct, rf and ri, so receivers that follow it ignore them"
        )
        if tags.get("pct", "100") != "100":
            problems.append(
                f"pct={tags['pct']} no longer limits the policy to part of your mail; "
                "use t=y while testing, then remove it"
            )
    if not problems:
        how = f"np={np}" if np else f"np not set: they get {effective or 'the policy'}"
        return Check("dmarc-tags", True, f"DMARC at {where}: non-existent subdomains {how}.")
    fixed = _fixed_dmarc(record, tags, np_wanted=any("np=reject" in p for p in problems))
    fixes = () if fixed == record else (Fix(_fqdn(where), "TXT", fixed, _fqdn(domain)),)
    return Check("dmarc-tags", False, "; ".join(problems) + ".", fixes, advisory=True)


def _fixed_dmarc(record: str, tags: dict[str, str], *, np_wanted: bool) -> str:
    """``record`` without pct/rf/ri (t=y for a pct below 100), with np=reject if wanted."""
    parts: list[str] = []
    seen: set[str] = set()
    for part in record.split(";")[:_MAX_TERMS]:
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key in REMOVED_DMARC_TAGS or key in seen:
            continue
        seen.add(key)
        if key == "np" and np_wanted:
            value = "reject"
        parts.append(f"{key}={value.strip()}" if key != "v" else "v=DMARC1")
    if np_wanted and "np" not in seen:
        parts.append("np=reject")
    if tags.get("pct", "100") != "100" and "t" not in seen:
        parts.append("t=y")
    return "; ".join(parts)


# --- MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) -----------------------------------------


_STS_SHORT_AGE = 86_400  # seconds: an enforced policy kept less than a day warns


def _sts_id_ok(value: str) -> bool:
    return 1 <= len(value) <= 32 and value.isascii() and value.isalnum()


async def _mta_sts_check(resolver: Resolver, domain: str, fetch: PolicyFetcher) -> Check:
    name = f"_mta-sts.{domain}"
    origin = _fqdn(domain)
    answer = await resolver.lookup(name, "TXT")
    if not answer.settled:
        return _optional(_unknown("mta-sts", name))
    records = [r for r in answer.records if r.lower().startswith("v=sts")]
    example = Fix(_fqdn(name), "TXT", "v=STSv1; id=" + "20260101000000", origin)
    if not records:
        message = (
            f"{domain} has no MTA-STS record, so servers sending to it may fall back to "
            f"unencrypted SMTP; serve a policy at {policy_url(domain)} (mode: testing first), "
            "then add the record (change id= whenever the policy changes)."
        )
        return Check("mta-sts", False, message, (example,), advisory=True)
    if len(records) > 1:
        message = (
            f"There are {len(records)} MTA-STS records at {name}; senders ignore all. Keep one."
        )
        return Check("mta-sts", False, message, (example,))
    tags = _tags(records[0])
    if not records[0].startswith("v=STSv1") or tags.get("v") != "STSv1":
        message = f"The MTA-STS record at {name} must start with v=STSv1; senders ignore it."
        return Check("mta-sts", False, message, (example,))
    if not _sts_id_ok(tags.get("id", "")):
        message = f"The MTA-STS record at {name} needs id= of 1 to 32 letters and digits."
        return Check("mta-sts", False, message, (example,))
    fetched = await fetch(domain)
    if fetched.text is None:
        message = (
            f"{name} announces a policy, but {fetched.url} {fetched.error}; senders that cache "
            "no policy ignore it, and those with an old one keep using it. Serve the policy."
        )
        return Check("mta-sts", False, message)
    policy = parse_policy(fetched.text)
    if not policy.valid:
        message = f"The MTA-STS policy at {fetched.url} is invalid: {'; '.join(policy.problems)}."
        return Check("mta-sts", False, message)
    mx = await resolver.lookup(domain, "MX")
    if not mx.settled:
        return _unknown("mta-sts", f"the MX of {domain}")
    hosts = [bare_domain(r.split()[-1]) for r in mx.records if r.split() and r.split()[-1] != "."]
    unmatched = [h for h in hosts if not any(mx_matches(h, p) for p in policy.mx)]
    summary = (
        f"mode {policy.mode}, mx {', '.join(policy.mx) or '-'}, max_age {policy.max_age}"
        f" (id={tags['id']})"
    )
    if unmatched and policy.mode != "none":
        lost = "refuse to deliver" if policy.mode == "enforce" else "report failures"
        message = (
            f"MTA-STS for {domain} ({summary}) does not name the MX "
            f"{', '.join(unmatched)}, so senders {lost} to it; add an mx: line for it and "
            "change the record's id."
        )
        return Check("mta-sts", False, message)
    if policy.mode != "enforce":
        message = (
            f"MTA-STS for {domain}: {summary}. Mode {policy.mode} does not protect mail yet; "
            "once TLS-RPT reports show no failures, switch to mode: enforce and change the id."
        )
        return Check("mta-sts", False, message, advisory=True)
    if policy.max_age is not None and policy.max_age < _STS_SHORT_AGE:
        message = (
            f"MTA-STS for {domain}: {summary}. max_age {policy.max_age} is under a day, so "
            "senders soon forget the policy and a forged MX goes unnoticed in between; "
            "RFC 8461 3.2 suggests weeks (max_age: 1209600)."
        )
        return Check("mta-sts", False, message, advisory=True)
    return Check("mta-sts", True, f"MTA-STS for {domain}: {summary}; every MX is named.")


async def _tls_rpt_check(resolver: Resolver, domain: str) -> Check:
    name = f"_smtp._tls.{domain}"
    answer = await resolver.lookup(name, "TXT")
    if not answer.settled:
        return _optional(_unknown("tls-rpt", name))
    records = [r for r in answer.records if r.lower().startswith("v=tlsrpt")]
    fix = Fix(_fqdn(name), "TXT", f"v=TLSRPTv1; rua=mailto:tls-reports@{domain}", _fqdn(domain))
    if not records:
        message = (
            f"{domain} has no TLS-RPT record, so nobody tells you when senders cannot reach it "
            "over TLS; add one with a report address."
        )
        return Check("tls-rpt", False, message, (fix,), advisory=True)
    if len(records) > 1:
        message = f"There are {len(records)} TLS-RPT records at {name}; reporters ignore all."
        return Check("tls-rpt", False, message, (fix,))
    tags = _tags(records[0])
    if tags.get("v") != "TLSRPTv1":
        message = f"The TLS-RPT record at {name} must start with v=TLSRPTv1; reporters ignore it."
        return Check("tls-rpt", False, message, (fix,))
    uris = [u.strip() for u in tags.get("rua", "").split(",") if u.strip()]
    if not uris:
        message = f"The TLS-RPT record at {name} has no rua=, so reports go nowhere."
        return Check("tls-rpt", False, message, (fix,))
    bad = [u for u in uris if not u.lower().startswith(("mailto:", "https://"))]
    if bad:
        message = f"TLS-RPT rua= at {name} takes mailto: or https: URIs only, not {bad[0]}."
        return Check("tls-rpt", False, message, (fix,))
    return Check("tls-rpt", True, f"TLS-RPT at {name}: reports go to {', '.join(uris)}.")


# --- BIMI -----------------------------------------------------------------------------


async def _bimi_check(resolver: Resolver, domain: str, dmarc_tags: dict[str, str]) -> Check:
    name = f"default._bimi.{domain}"
    answer = await resolver.lookup(name, "TXT")
    if not answer.settled:
        return _optional(_unknown("bimi", name))
    records = [r for r in answer.records if r.lower().startswith("v=bimi")]
    if not records:
        return Check("bimi", True, f"No BIMI record at {name} (optional: a logo beside your mail).")
    example = Fix(
        _fqdn(name),
        "TXT",
        f"v=BIMI1; l=https://{domain}/bimi/logo.svg; a=https://{domain}/bimi/vmc.pem",
        _fqdn(domain),
    )
    if len(records) > 1:
        return Check("bimi", False, f"There are {len(records)} BIMI records at {name}; keep one.")
    tags = _tags(records[0])
    problems: list[str] = []
    if tags.get("v") != "BIMI1":
        problems.append("it must start with v=BIMI1")
    logo = tags.get("l", "")
    if not logo:
        problems.append("l= (the SVG logo's URL) is empty")
    elif not logo.lower().startswith("https://"):
        problems.append(f"the logo l={logo} must be an https:// URL")
    elif not logo.lower().split("?", 1)[0].endswith(".svg"):
        problems.append(f"the logo l={logo} must be an SVG (SVG Tiny PS) file")
    authority = tags.get("a", "")
    if authority and not authority.lower().startswith("https://"):
        problems.append(f"the certificate a={authority} must be an https:// URL")
    policy = dmarc_tags.get("p", "").lower()
    if policy not in ("quarantine", "reject"):
        problems.append(
            "BIMI needs DMARC p=quarantine or p=reject, and the DMARC record has "
            + (f"p={policy}" if policy else "no policy")
        )
    if problems:
        message = f"The BIMI record at {name} will not show a logo: {'; '.join(problems)}."
        return Check("bimi", False, message, (example,))
    if not authority:
        message = (
            f"BIMI at {name}: logo {logo}; without a= (a VMC or CMC certificate) Gmail and "
            "Apple Mail show no logo."
        )
        return Check("bimi", False, message, advisory=True)
    return Check("bimi", True, f"BIMI at {name}: logo {logo}, certificate {authority}.")


# --- PTR and forward-confirmed reverse DNS ---------------------------------------------


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError as exc:
        raise ConfigurationError(f"{text!r} is not an IP address", setting="sending_ip") from exc


async def _ptr_check(
    resolver: Resolver, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, domain: str
) -> Check:
    name = f"ptr:{ip}"
    reverse = ip.reverse_pointer
    rdtype = "A" if ip.version == 4 else "AAAA"
    host = f"mail.{domain}"
    answer = await resolver.lookup(reverse, "PTR")
    if not answer.settled:
        return _unknown(name, reverse)
    ptrs = [bare_domain(r) for r in answer.records if bare_domain(r)]
    if not ptrs:
        fixes = (
            Fix(_fqdn(reverse), "PTR", _fqdn(host)),
            Fix(_fqdn(host), rdtype, str(ip), _fqdn(domain)),
        )
        message = (
            f"{ip} has no PTR record ({reverse}), and Gmail and others refuse mail from IPs "
            "without reverse DNS; ask whoever owns the IP (your hosting or cloud provider) "
            f"to set the PTR to a name like {host}, and give that name an {rdtype} record."
        )
        return Check(name, False, message, fixes)
    unknown: list[str] = []
    for ptr in ptrs[:_MAX_DEPTH]:
        forward = await resolver.lookup(ptr, rdtype)
        if not forward.settled:
            unknown.append(ptr)
            continue
        if any(_same_ip(record, ip) for record in forward.records):
            return Check(name, True, f"{ip} has PTR {ptr}, which resolves back to {ip}.")
    if unknown:
        return _unknown(name, f"the {rdtype} of {', '.join(unknown)}")
    fix = (Fix(_fqdn(ptrs[0]), rdtype, str(ip), _fqdn(domain)),)
    message = (
        f"{ip} has PTR {', '.join(ptrs)}, but {ptrs[0]} does not resolve back to {ip} "
        f"(no {rdtype} record for it), so reverse DNS is not forward-confirmed; add the "
        f"{rdtype} record."
    )
    return Check(name, False, message, fix)


async def _ptr_checks(
    resolver: Resolver, ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address], domain: str
) -> list[Check]:
    return list(await asyncio.gather(*(_ptr_check(resolver, ip, domain) for ip in ips)))


def _same_ip(record: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(record.strip()) == ip
    except ValueError:
        return False


# --- the per-stream From and DKIM domains ----------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamIdentity:
    """Who a stream of mail says it is from: its From domain and its DKIM domain and selector.

    ``dkim_private_key`` (PEM), when given, is compared with the published key.
    """

    stream: str
    from_domain: str
    dkim_domain: str | None = None
    selector: str | None = None
    dkim_private_key: bytes | None = field(default=None, repr=False)


async def stream_checks(
    resolver: Resolver, streams: Sequence[StreamIdentity], /, *, domain: str | None = None
) -> list[Check]:
    """One ``stream:NAME`` check per stream: DKIM signs, its key is published, it aligns.

    A stream aligns for DMARC when its DKIM domain lines up with its From domain (the
    same organizational domain, or the same name under ``adkim=s``), and its From domain
    has a DMARC record. With ``domain`` (the diagnosed domain), a stream whose From is
    under another organizational domain is only named, not checked.
    """
    return list(await asyncio.gather(*(_stream_check(resolver, s, domain) for s in streams)))


async def _stream_check(resolver: Resolver, stream: StreamIdentity, domain: str | None) -> Check:
    name = f"stream:{stream.stream}"
    from_domain = _domain(stream.from_domain, f"streams.{stream.stream}.from")
    if domain is not None and site_of(from_domain) != site_of(domain):
        return Check(
            name,
            True,
            f"Stream {stream.stream} sends From {from_domain}, not under {site_of(domain)}: "
            f"run `sender doctor {from_domain}` for it.",
        )
    if not stream.dkim_domain or not stream.selector:
        message = (
            f"Stream {stream.stream} (From {from_domain}) is not DKIM-signed; Gmail and Yahoo "
            "require DKIM from bulk senders. Set dkim_domain, dkim_selector and dkim_key."
        )
        return Check(name, False, message, advisory=True)
    dkim_domain = _domain(stream.dkim_domain, f"streams.{stream.stream}.dkim_domain")
    selector = stream.selector.strip().strip(".").lower()
    (dmarc, tags, _where, _record), dkim = await asyncio.gather(
        _dmarc_lookup(resolver, from_domain),
        _dkim_check(resolver, dkim_domain, selector, stream.dkim_private_key),
    )
    strict = tags.get("adkim", "r").lower() == "s"
    lines_up = (
        dkim_domain == from_domain if strict else site_of(dkim_domain) == site_of(from_domain)
    )
    identity = f"Stream {stream.stream}: From {from_domain}, DKIM d={dkim_domain} s={selector}"
    if not lines_up:
        mode = "strict (adkim=s)" if strict else "relaxed"
        message = (
            f"{identity}: d={dkim_domain} does not align with {from_domain} ({mode}), so DKIM "
            f"does not count for DMARC; sign with a domain under {site_of(from_domain)}"
            + (" or set adkim=r." if strict else ".")
        )
        return Check(name, False, message)
    if dkim.unknown or dmarc.unknown:
        return Check(
            name, False, f"{identity}: {(dkim if dkim.unknown else dmarc).message}", unknown=True
        )
    if not dkim.ok:
        return Check(name, False, f"{identity}: {dkim.message}", dkim.fixes)
    if not dmarc.ok:
        return Check(name, False, f"{identity}: {dmarc.message}", dmarc.fixes)
    return Check(name, True, f"{identity}: the key is published and aligns; {dmarc.message}")
