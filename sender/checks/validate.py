"""Address checks on a whole participant list before sending; the only email-validator user.

Each address gets one :class:`AddressCheck` with a :class:`Verdict` and a one-line
reason a course administrator understands::

    syntax (email-validator)       bad          -> invalid  "syntax: ..."
    suppression list (the Store)   listed       -> invalid  "on the suppression list: ..."
    the domain's DNS (MX, then A,  NXDOMAIN     -> invalid  "the domain x does not exist"
      then AAAA; A-labels asked)   MX "0 ."     -> invalid  "... accepts no mail (null MX)"
                                   none of them -> invalid  "... has no mail server"
                                   no answer    -> unknown  "DNS did not answer ... (timeout)"
    typo of a big provider, or of  1 edit away  -> risky    with the suggestion
      the list's frequent domains
    hard bounces kept, not listed  any          -> risky

Timeouts and SERVFAIL are never ``invalid``: a DNS outage must not throw away good
addresses. A domain that does not exist keeps ``invalid`` when it also looks like a
typo, and carries the suggestion. A domain that exists is called ``risky`` only when
it is *one* edit from a known domain (``gmai.com``); two edits from one
(``gimal.com``) is a suggestion only when the domain cannot take mail anyway.

:meth:`Validator.check_many` does the syntax first, then looks every distinct domain
up once, concurrently (bounded by the :class:`~sender.checks.resolve.Resolver`'s
concurrency), and asks the store in batches; results come back in input order.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from email_validator import EmailNotValidError, validate_email

from sender.addresses import MAX_LOCAL_PART, address_key, bare_domain
from sender.checks.resolve import Answer, LookupStatus, Resolver
from sender.participants import CsvRow
from sender.store.base import Store

__all__ = ["AddressCheck", "ValidationSummary", "Validator", "Verdict", "suggest_domain"]


class Verdict(StrEnum):
    OK = "ok"
    INVALID = "invalid"  # will not be delivered: do not send
    RISKY = "risky"  # may well be wrong: ask the participant
    UNKNOWN = "unknown"  # DNS did not answer: check again later


@dataclass(frozen=True, slots=True)
class AddressCheck:
    """What was found about one address."""

    email: str  # as given
    normalized: str | None  # email-validator's normalized form; None when the syntax is bad
    verdict: Verdict
    reason: str  # one line, for people: "the domain gmial.com does not exist"
    suggestion: str | None = None  # a corrected address, e.g. "kari@gmail.com"


@dataclass(frozen=True, slots=True)
class ValidationSummary:
    """Checks of a list by input row, and how many got each verdict (zeros included)."""

    checks: tuple[tuple[int, AddressCheck], ...]
    counts: Mapping[Verdict, int] = field(default_factory=dict)

    @classmethod
    def of(cls, checks: Iterable[tuple[int, AddressCheck]], /) -> ValidationSummary:
        """Summarize (row, check) pairs; the rows keep their order."""
        rows = tuple(checks)
        counts = dict.fromkeys(Verdict, 0)
        for _, check in rows:
            counts[check.verdict] += 1
        return cls(rows, counts)

    @property
    def total(self) -> int:
        return len(self.checks)

    @property
    def problems(self) -> list[tuple[int, AddressCheck]]:
        """Every row whose verdict is not ``ok``, in row order: what a report lists."""
        return [(row, check) for row, check in self.checks if check.verdict is not Verdict.OK]


# Big mailbox providers: typos of these are worth a question. Country variants are
# listed so that a real one (gmx.at, live.no) is never "corrected" to another.
_PROVIDER_NAMES = """
    gmail.com googlemail.com outlook.com outlook.de outlook.fr hotmail.com hotmail.co.uk
    hotmail.fr hotmail.de hotmail.it hotmail.es hotmail.no hotmail.se live.com live.no live.se
    live.dk live.de live.fr live.nl live.co.uk msn.com yahoo.com yahoo.co.uk yahoo.fr
    yahoo.de yahoo.es yahoo.it yahoo.no yahoo.se yahoo.dk yahoo.co.jp yahoo.com.au ymail.com
    rocketmail.com icloud.com me.com mac.com aol.com gmx.de gmx.net gmx.at gmx.ch gmx.com
    web.de t-online.de freenet.de online.no proton.me protonmail.com pm.me mail.com zoho.com
    yandex.ru yandex.com mail.ru qq.com 163.com 126.com naver.com docomo.ne.jp ezweb.ne.jp
    softbank.ne.jp orange.fr free.fr laposte.net libero.it comcast.net verizon.net att.net
    sbcglobal.net bigpond.com shaw.ca telia.com telenor.no live.ca bluewin.ch
"""
PROVIDERS = frozenset(_PROVIDER_NAMES.split())
FREQUENT_MIN = 5  # a list's own domain is "frequent" when seen this often ...
FREQUENT_SHARE = 0.01  # ... and in at least this share of the list
FREQUENT_RATIO = 10  # and it is a typo target only for domains this many times rarer
_STORE_BATCH = 1000


def suggest_domain(domain: str, /, *, known: Iterable[str] = ()) -> str | None:
    """The domain ``domain`` is probably a typo of, from big providers and ``known``; or None.

    A near miss is at most two edits away (Damerau-Levenshtein: a swap of two
    neighbours is one), one for domains under nine characters, and either the
    name (``gmial.com``) or the rest (``gmail.con``) matches exactly; names of
    three letters or fewer (``gmx.de``, ``qq.com``) are only matched on the rest.
    Ties between two different domains suggest nothing. A domain that is itself a
    provider or in ``known`` gets no suggestion.
    """
    found = _nearest(domain, known)
    return found[0] if found else None


def _nearest(domain: str, known: Iterable[str]) -> tuple[str, int] | None:
    domain = bare_domain(domain)
    candidates = set(PROVIDERS).union(bare_domain(k) for k in known)
    if not domain or domain in candidates or "." not in domain:
        return None
    name, _, rest = domain.partition(".")
    best: tuple[str, int] | None = None
    tied = False
    for candidate in candidates:
        c_name, _, c_rest = candidate.partition(".")
        if c_name == name:
            pass  # a typo in the suffix: gmail.con
        elif c_rest == rest and len(c_name) >= 4:
            pass  # a typo in the name: gmial.com
        else:
            continue
        limit = 2 if len(candidate) >= 9 else 1
        distance = _distance(domain, candidate, limit)
        if distance > limit:
            continue
        if best is None or distance < best[1]:
            best, tied = (candidate, distance), False
        elif distance == best[1]:
            tied = True
    return None if best is None or tied else best


def _distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance, or ``limit + 1`` once it must exceed ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                value = min(value, previous2[j - 2] + 1)
            current[j] = value
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


@dataclass(frozen=True, slots=True)
class _Syntax:
    normalized: str
    local: str
    domain: str  # Unicode form, for people
    ascii_domain: str  # A-labels, for DNS
    keys: tuple[str, ...]  # the canonical key (sender.addresses), as the store knows it


@dataclass(frozen=True, slots=True)
class _Domain:
    verdict: Verdict  # OK, INVALID or UNKNOWN
    reason: str


# The plain ASCII dot-atom local parts (a subset of RFC 5322's) that email-validator
# passes unchanged; RFC 2142 role names, which it lower-cases, are left to it.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*\Z")
_ROLE_NAMES = frozenset(
    {"info", "marketing", "sales", "support", "abuse", "noc", "security", "postmaster"}
    | {"hostmaster", "usenet", "news", "webmaster", "www", "uucp", "ftp"}
)
_MAX_ADDRESS = 254  # octets (RFC 5321 4.5.3.1.3)


class _SyntaxChecker:
    """email-validator's syntax check, with its domain half done once per distinct domain.

    Checking the domain (IDNA, UTS #46) is two thirds of ``validate_email``'s cost and
    depends on the domain alone. So the first address at each domain goes through
    ``validate_email`` whole; after that, an address with a plain ASCII local part at
    a domain it accepted gets the answer ``validate_email`` would give without calling
    it (``tests/test_validate.py`` checks the two agree). Anything else goes through
    ``validate_email``.
    """

    def __init__(self) -> None:
        # as written -> (Unicode, A-labels, the longest of the three forms in octets)
        self._domains: dict[str, tuple[str, str, int]] = {}

    def __call__(self, email: str) -> _Syntax | str:
        """The parsed address, or the problem as one line."""
        text = email.strip()
        local, at, written = text.rpartition("@")
        if len(local.encode("utf-8", "surrogatepass")) > MAX_LOCAL_PART:  # RFC 5321 4.5.3.1.1
            return f"syntax: the part before the @ is longer than {MAX_LOCAL_PART} octets"
        known = self._domains.get(written) if at else None
        if (
            known is not None
            and _PLAIN_LOCAL.match(local)
            and local.lower() not in _ROLE_NAMES
            and len(local) + 1 + known[2] <= _MAX_ADDRESS
        ):
            domain, ascii_domain, _ = known
            normalized = f"{local}@{domain}"
            return _Syntax(normalized, local, domain, ascii_domain, (address_key(text),))
        try:
            valid = validate_email(text, check_deliverability=False, allow_smtputf8=True)
        except EmailNotValidError as exc:
            return "syntax: " + " ".join(str(exc).split())
        except (ValueError, TypeError, UnicodeError):  # email-validator should not; never crash
            return "syntax: this is not an e-mail address"
        if at and valid.original == text:  # so ``written`` is exactly what it checked
            longest = max(len(d.encode()) for d in (written, valid.domain, valid.ascii_domain))
            self._domains[written] = (valid.domain, valid.ascii_domain, longest)
        keys = {address_key(text), address_key(valid.normalized)}
        return _Syntax(
            valid.normalized,
            valid.local_part,
            valid.domain,
            valid.ascii_domain,
            tuple(sorted(keys)),
        )


def _null_mx(record: str) -> bool:
    _, _, exchange = record.partition(" ")
    return exchange.strip() == "."


class Validator:
    """Checks addresses: syntax, the domain's mail servers, typos, and the store's bounces."""

    def __init__(
        self,
        resolver: Resolver,
        /,
        *,
        store: Store | None = None,
        known_domains: Iterable[str] = (),
    ) -> None:
        self.resolver = resolver
        self.store = store
        self.known_domains = frozenset(bare_domain(d) for d in known_domains)

    async def check(self, email: str, /) -> AddressCheck:
        """Check one address (as :meth:`check_many` of one)."""
        return (await self.check_many([email]))[0]

    async def check_rows(
        self, rows: Iterable[CsvRow], /, *, on_progress: Callable[[int], None] | None = None
    ) -> ValidationSummary:
        """Check the address of every CSV row that has one (bad rows included), by row."""
        with_email = [(row.row, row.email) for row in rows if row.email is not None]
        checks = await self.check_many([email for _, email in with_email], on_progress=on_progress)
        return ValidationSummary.of(zip((row for row, _ in with_email), checks, strict=True))

    async def check_many(
        self,
        emails: Iterable[str],
        /,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[AddressCheck]:
        """Check every address; results in input order.

        Each distinct domain is looked up once, all concurrently within the
        resolver's bound. ``on_progress`` is called with how many addresses are
        settled so far (never decreasing, ending with all of them).
        """
        given = list(emails)
        syntax_of = _SyntaxChecker()
        parsed: dict[str, _Syntax | str] = {}
        for email in given:
            if email not in parsed:
                parsed[email] = syntax_of(email)
        per_domain: Counter[str] = Counter()
        for email in given:
            syntax = parsed[email]
            if isinstance(syntax, _Syntax):
                per_domain[syntax.ascii_domain] += 1

        done = len(given) - sum(per_domain.values())
        if on_progress is not None and done:
            on_progress(done)

        def settled(domain: str) -> None:
            nonlocal done
            done += per_domain[domain]
            if on_progress is not None:
                on_progress(done)

        domains = await self._domains(list(per_domain), settled)
        suppressed, bounced = await self._store_findings(
            [syntax for syntax in parsed.values() if isinstance(syntax, _Syntax)]
        )
        frequent = {
            domain: count
            for domain, count in per_domain.items()
            if count >= FREQUENT_MIN and count >= FREQUENT_SHARE * len(given)
        }
        suggestions: dict[str, tuple[str, int] | None] = {}
        for domain, count in per_domain.items():
            known = self.known_domains | {
                d for d, n in frequent.items() if n >= FREQUENT_RATIO * count
            }
            suggestions[domain] = _nearest(domain, known)

        results: dict[str, AddressCheck] = {}
        for email, syntax in parsed.items():
            if isinstance(syntax, str):
                results[email] = AddressCheck(email, None, Verdict.INVALID, syntax)
            else:
                results[email] = self._verdict(
                    email,
                    syntax,
                    domains[syntax.ascii_domain],
                    suggestions[syntax.ascii_domain],
                    suppressed,
                    bounced,
                )
        return [results[email] for email in given]

    def _verdict(
        self,
        email: str,
        syntax: _Syntax,
        domain: _Domain,
        near: tuple[str, int] | None,
        suppressed: Mapping[str, str],
        bounced: Mapping[str, str],
    ) -> AddressCheck:
        suggestion = f"{syntax.local}@{near[0]}" if near else None
        listed = next((suppressed[k] for k in syntax.keys if k in suppressed), None)
        if listed is not None:
            return AddressCheck(email, syntax.normalized, Verdict.INVALID, listed, suggestion)
        if domain.verdict is Verdict.OK:
            if near is not None and near[1] == 1:
                return AddressCheck(
                    email,
                    syntax.normalized,
                    Verdict.RISKY,
                    f"the domain {syntax.domain} looks like a typo of {near[0]}",
                    suggestion,
                )
            hard = next((bounced[k] for k in syntax.keys if k in bounced), None)
            if hard is not None:
                return AddressCheck(email, syntax.normalized, Verdict.RISKY, hard)
            return AddressCheck(email, syntax.normalized, Verdict.OK, domain.reason)
        reason = domain.reason + (f"; did you mean {near[0]}?" if near else "")
        return AddressCheck(email, syntax.normalized, domain.verdict, reason, suggestion)

    async def _domains(
        self, domains: Sequence[str], settled: Callable[[str], None]
    ) -> dict[str, _Domain]:
        """Every domain looked up by a bounded pool of workers, each domain once."""
        found: dict[str, _Domain] = {}
        pending: Iterator[str] = iter(domains)

        async def worker() -> None:
            for domain in pending:  # shared: each domain goes to exactly one worker
                found[domain] = await self._domain(domain)
                settled(domain)

        workers = min(len(domains), self.resolver.settings.concurrency)
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
        return found

    async def _domain(self, domain: str) -> _Domain:
        """Whether mail for ``domain`` (A-labels) has somewhere to go, by MX, A, then AAAA."""
        shown = _shown(domain)
        mx = await self.resolver.lookup(domain, "MX")
        if mx.status is LookupStatus.OK:
            if all(_null_mx(record) for record in mx.records):
                return _Domain(Verdict.INVALID, f"{shown} accepts no mail (null MX, RFC 7505)")
            return _Domain(Verdict.OK, "the domain has a mail server (MX)")
        if mx.status is not LookupStatus.NODATA:
            return _unsettled(mx, shown)
        for rdtype in ("A", "AAAA"):
            answer = await self.resolver.lookup(domain, rdtype)
            if answer.status is LookupStatus.OK:
                return _Domain(Verdict.OK, f"the domain has no MX but an address ({rdtype})")
            if answer.status is not LookupStatus.NODATA:
                return _unsettled(answer, shown)
        return _Domain(Verdict.INVALID, f"{shown} has no mail server (no MX, A or AAAA record)")

    async def _store_findings(
        self, parsed: Sequence[_Syntax]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Reasons by address key: suppressed ones, and hard-bounced ones."""
        if self.store is None or not parsed:
            return {}, {}
        keys = sorted({key for syntax in parsed for key in syntax.keys})
        suppressed: dict[str, str] = {}
        for start in range(0, len(keys), _STORE_BATCH):
            found = await self.store.suppressed(keys[start : start + _STORE_BATCH])
            for key, entry in found.items():
                why = entry.reason or entry.kind
                suppressed[key] = f"on the suppression list: {why}"
        wanted = set(keys)
        bounced: dict[str, str] = {}
        for record in await self.store.bounces():
            address = address_key(record.address or "")
            if record.kind == "hard" and not record.forged and address in wanted:
                status = f" ({record.status})" if record.status else ""
                bounced[address] = (
                    f"hard-bounced before{status}, though not on the suppression list"
                )
        return suppressed, bounced


def _shown(ascii_domain: str) -> str:
    try:
        unicode = ascii_domain.encode("ascii").decode("idna")
    except UnicodeError:
        unicode = ascii_domain
    return f"the domain {unicode}"


def _unsettled(answer: Answer, shown: str) -> _Domain:
    if answer.status is LookupStatus.NXDOMAIN:
        return _Domain(Verdict.INVALID, f"{shown} does not exist")
    why = "timeout" if answer.status is LookupStatus.TIMEOUT else "server failure"
    return _Domain(Verdict.UNKNOWN, f"DNS did not answer for {shown.removeprefix('the ')} ({why})")
