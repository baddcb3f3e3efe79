"""Bounce accuracy on real mail: sender against Sisimai's answers, beside flufl.bounce.

Run from the repository root (flufl.bounce is the peer, installed for the bench only:
``pip install flufl.bounce``; without it the peer's column is left out)::

    python bench/bounces.py [--corpus DIR] [--prefix lhost-gmail] [--repeats 3]
                            [--failures] [--show FILE] [--check]

The corpus is ``DIR/sisimai/*.eml`` with Sisimai 5's answers in ``DIR/expected.json``
(see the corpus README). Each file is parsed ``--repeats`` times by
``sender.feedback.bounces.parse_bounce`` and by flufl.bounce's ``all_failures``; the time
per file is the fastest repeat, and each parse is cut off after ``--timeout`` seconds (a
hang counts as a crash). The rules each figure follows are printed with it (``RULES``).
``--failures`` prints expected against got for every failing file, ``--show FILE`` for
one; ``--check`` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import email
import json
import signal
import statistics
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sender.feedback.bounces import parse_bounce
from sender.vocabulary import Reason

FluflScan = Callable[[Message], tuple[frozenset[bytes], frozenset[bytes]]]


def load_flufl() -> FluflScan | None:
    """flufl.bounce's scanner; the peer is optional, so the bench says so and goes on."""
    try:
        from flufl.bounce import all_failures
    except ImportError:
        return None
    scan: FluflScan = all_failures
    return scan


all_failures = load_flufl()

DEFAULT_CORPUS = Path("/work/shared/corpora/bounces")

# Sisimai 5's reasons in sender's vocabulary. Adjust here; nothing else names them.
SISIMAI_REASONS: dict[str, str] = {
    "userunknown": "user_unknown",
    "hostunknown": "host_unknown",
    "hasmoved": "has_moved",
    "notaccept": "not_accepting",
    "suspend": "suspended",
    "mailboxfull": "mailbox_full",
    "systemfull": "system_error",  # the receiving server's disk, not the mailbox
    "exceedlimit": "quota_exceeded",  # 5.2.3: over the mailbox's own size limit
    "mesgtoobig": "message_too_big",
    "filtered": "filtered",
    "rejected": "rejected_sender",
    "blocked": "blocked",
    "badreputation": "bad_reputation",
    "requireptr": "ptr_required",
    "authfailure": "auth_failure",
    "securityerror": "auth_failure",  # in this corpus: 5.7.x authentication or TLS demands
    "policyviolation": "policy",
    "spamdetected": "spam_detected",
    "virusdetected": "virus",
    "contenterror": "content_error",
    "notcompliantrfc": "not_rfc_compliant",
    "norelaying": "relaying_denied",
    "syntaxerror": "syntax_error",
    "mailererror": "mailer_error",
    "networkerror": "network_error",
    "toomanyconn": "too_many_connections",
    "speeding": "rate_limited",
    "systemerror": "system_error",
    "expired": "expired",
    "feedback": "complaint",
    "vacation": "auto_reply",  # Sisimai 4; Sisimai 5 reports no auto-replies
    "delivered": "delivered",
    "onhold": "undefined",
    "undefined": "undefined",
}
# sender's reason vocabulary (issue 13), from its one home: a name outside it is reported.
VOCABULARY = frozenset(reason.value for reason in Reason)
# sender's reason names before issue 13 that are renames of the vocabulary's; delete once
# sender no longer gives them.
LEGACY_REASONS = {"unknown_user": "user_unknown", "no_domain": "host_unknown"}
LEGACY_REASONS |= {"autoreply": "auto_reply"}

ORIGINAL_RECIPIENT = "Original-Recipient, the address written to, over the expanded Final-Recipient"

# Where the project's answer replaces Sisimai's, and why. ``None`` as verdict or
# reason: no reference, the file is left out of that figure.
OVERRIDES: dict[str, tuple[str, list[tuple[str, bool | None, str | None]]]] = {
    "lhost-domino-03.eml": (
        "Sisimai reads the prose's address; the DSN's Final-Recipient is .org",
        [("kijitora@neko.example.org", False, "network_error")],
    ),
    "lhost-office365-04.eml": (
        "Sisimai truncates the local part; Final-Recipient has it whole",
        [("otsu-sakaba-hunter-neko-nyaaaaaaan@ezweb.ne.jp", False, "filtered")],
    ),
    "lhost-mfilter-05.eml": (
        "Sisimai finds nothing; the body names one address, 452 4.3.1",
        [("kijitora@example.co.jp", False, None)],
    ),
    "lhost-mimecast-01.eml": (
        "Sisimai finds nothing; the body names one address, 5.4.1 access denied",
        [("sabineko@neko.ef.example.org", None, None)],
    ),
    "lhost-mimecast-02.eml": (
        "Sisimai finds nothing; a text/plain DSN names one address, 5.7.54 no relaying",
        [("sabatora@example.net", False, "relaying_denied")],
    ),
    "lhost-x1-03.eml": (
        "Sisimai finds nothing; the body says [User unknown]",
        [("kijitora@example.org", True, "user_unknown")],
    ),
    "lhost-x1-04.eml": (
        "Sisimai finds nothing; the body says [Connection timed out]",
        [("kijitora-neko@neko.example.go.jp", False, None)],
    ),
    # Alias expansion (issue 13, shape 3): Sisimai reports the expanded Final-Recipient,
    # sender the Original-Recipient, the address it wrote to and the one to suppress.
    # Sisimai's verdict and reason stand, except where noted.
    "lhost-postfix-01.eml": (
        ORIGINAL_RECIPIENT,
        [("kijitora@example.org", False, "mailer_error")],
    ),
    "lhost-postfix-77.eml": (
        ORIGINAL_RECIPIENT + "; 'Email address is not verified' (SES) refuses the sender",
        [("neko@example.co.jp", False, "rejected_sender")],
    ),
    "lhost-postfix-78.eml": (
        ORIGINAL_RECIPIENT,
        [("neko@example.co.jp", False, "content_error")],
    ),
    "lhost-postfix-79.eml": (
        ORIGINAL_RECIPIENT,
        [("nekko@c.example.co.jp", False, "mailer_error")],
    ),
    "rhost-google-03.eml": (
        ORIGINAL_RECIPIENT,
        [("neko@example.co.jp", False, "auth_failure")],
    ),
    "rhost-google-04.eml": (
        ORIGINAL_RECIPIENT,
        [("contact@example.co.jp", False, "auth_failure")],
    ),
    "rhost-google-06.eml": (
        ORIGINAL_RECIPIENT,
        [("michitsuna@example.org", False, "ptr_required")],
    ),
    "rfc3464-09.eml": (
        ORIGINAL_RECIPIENT,
        [("kijitora-nyaaaaaan@example.co.jp", False, "mailbox_full")],
    ),
    "lhost-postfix-49.eml": (
        ORIGINAL_RECIPIENT + " (a report forwarded inside a text/plain body)",
        [("toraneko@neko.example.co.jp", False, "blocked")],
    ),
    "lhost-postfix-32.eml": (
        ORIGINAL_RECIPIENT + ", written without the quotes Final-Recipient has",
        [("neko....nyaan....@libsisimai.org", True, "user_unknown")],
    ),
    "lhost-x1-01.eml": (
        "Sisimai says filtered; the server's only words are [User unknown] (tests/test_prose.py)",
        [("kijitora@example.co.jp", True, "user_unknown")],
    ),
    "lhost-mxlogic-03.eml": (
        "Sisimai says filtered; the reply is '550 unknown user', no filter (tests/test_prose.py)",
        [("kijitora@example.co.jp", True, "user_unknown")],
    ),
    # SMTP stage (issue 13): an unknown user at DATA is a filter, at RCPT TO a dead address;
    # these are in tests/test_bounce_shapes.py.
    "lhost-sendmail-02.eml": (
        "DATA answered 'Need RCPT': the 550s before it were pipelined RCPT replies",
        [
            ("userunknown@example.org", True, "user_unknown"),
            ("filtered@example.com", True, "user_unknown"),
        ],
    ),
    "lhost-sendmail-27.eml": (
        "DATA answered 'Need RCPT': the 550s before it were pipelined RCPT replies",
        [("this-local-part-does-not-exist-on-the-system@mineo.jp", True, "user_unknown")],
    ),
    "lhost-sendmail-48.eml": (
        "DATA answered 'no valid recipients': the 550s before it were RCPT replies",
        [("pseudo-local-part-kijitora-nyaan@sfr.fr", True, "user_unknown")],
    ),
    "lhost-receivingses-01.eml": (
        "Sisimai calls every SES inbound refusal filtered; this one is 5.1.1 'Mailbox does not "
        "exist'",
        [("userunknown@neko.example.jp", True, "user_unknown")],
    ),
    "lhost-receivingses-02.eml": (
        "as lhost-receivingses-01: 5.1.1 'Mailbox does not exist'",
        [("userunknown@neko.example.jp", True, "user_unknown")],
    ),
    "lhost-opensmtpd-12.eml": (
        "a delay report ('only a temporary failure', still queued): nothing is dead yet",
        [("neko@nyaan.jp", False, "delayed")],
    ),
    "lhost-postfix-05.eml": (
        "450 4.1.1 is temporary (the server asks us to retry): counted, not suppressed",
        [("kijitora@example.org", False, "user_unknown")],
    ),
}

NOBODY = "(nobody)"  # a finding without a recipient, or Sisimai's placeholder for one
PLACEHOLDER_DOMAIN = "@libsisimai.org.invalid"
NOT_FAILURES = frozenset({"delivered", "relayed", "expanded"})
AUTOREPLY = frozenset({"autoreply", "auto_reply"})

TARGET_RECIPIENTS = 0.97
TARGET_SUPPRESS = 0.95
TARGET_SLOWEST = 0.050

RULES = f"""\
Rules:
  recipients   a file is right when the set of failed recipients equals Sisimai's, compared
               lower-cased. Sisimai's 'delivered' entries and sender's findings that are
               delivered, relayed, expanded or auto-replies are left out on both sides.
               A finding without a recipient, and Sisimai's placeholder *{PLACEHOLDER_DOMAIN},
               count as the one address {NOBODY}. A file with no expected recipient is right
               when nothing but {NOBODY} comes out (a finding kept for a human is no error).
  suppression  a file agrees when the set of addresses the findings suppress equals the set
               Sisimai calls dead (address_is_dead, or reason 'feedback': a complaint).
               sender: the finding's `suppress` if it has one, else kind hard or complaint
               (what feedback/suppression.py's apply_bounce does today). flufl.bounce: its
               permanent-failure set.
  reasons      per Sisimai entry whose recipient sender found: sender's reason for that
               address equals SISIMAI_REASONS[Sisimai's reason]. Entries with no reference
               reason are left out.
  overrides    {len(OVERRIDES)} files where the project's answer replaces Sisimai's (OVERRIDES).
  time         fastest of the repeats per file, including the MIME parse."""


@dataclass(frozen=True, slots=True)
class Expected:
    """One Sisimai entry, in the bench's terms."""

    recipient: str
    dead: bool | None  # None: no reference verdict
    reason: str | None  # sender's vocabulary; None: no reference reason
    sisimai_reason: str


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding as the bench compares it, from either parser."""

    recipient: str
    suppress: bool
    reason: str | None
    counted: bool  # a failure (not delivered, relayed or an auto-reply)
    detail: str


@dataclass(slots=True)
class Outcome:
    """What one parser made of one file."""

    findings: list[Finding] = field(default_factory=list)
    crash: str | None = None
    seconds: float = 0.0

    def recipients(self) -> set[str]:
        return {f.recipient for f in self.findings if f.counted}

    def suppressed(self) -> set[str]:
        return {f.recipient for f in self.findings if f.counted and f.suppress}


class ParseTimeout(Exception):
    """A parse ran past the bench's per-file bound."""


@contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise ParseTimeout(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def address(value: str | None) -> str:
    if not value:
        return NOBODY
    value = value.strip().lower()
    return NOBODY if value.endswith(PLACEHOLDER_DOMAIN) else value


def load_expected(corpus: Path) -> dict[str, list[Expected]]:
    raw = json.loads((corpus / "expected.json").read_text())
    expected: dict[str, list[Expected]] = {}
    for name, entries in raw.items():
        expected[name] = [
            Expected(
                address(e["recipient"]),
                bool(e["address_is_dead"]) or e["reason"] == "feedback",
                SISIMAI_REASONS.get(e["reason"]),
                e["reason"],
            )
            for e in entries
            if e["reason"] != "delivered"
        ]
    for name, (_why, entries) in OVERRIDES.items():
        expected[name] = [Expected(address(r), dead, why, "override") for r, dead, why in entries]
    return expected


def sender_findings(data: bytes) -> list[Finding]:
    found = []
    for bounce in parse_bounce(data):
        kind = str(getattr(bounce, "kind", ""))
        reason = getattr(bounce, "reason", None)
        reason = LEGACY_REASONS.get(reason, reason) if isinstance(reason, str) else None
        suppress = getattr(bounce, "suppress", None)
        if not isinstance(suppress, bool):
            suppress = kind in {"hard", "complaint"}
        action = str(getattr(bounce, "action", "") or "").lower()
        counted = not (kind in AUTOREPLY or reason in AUTOREPLY | {"delivered"})
        counted = counted and action not in NOT_FAILURES
        status = getattr(bounce, "status", None)
        detail = f"{kind} {reason} {status} suppress={suppress}"
        found.append(Finding(address(bounce.recipient), suppress, reason, counted, detail))
    return found


def flufl_findings(data: bytes) -> list[Finding]:
    if all_failures is None:
        return []
    temporary, permanent = all_failures(email.message_from_bytes(data))
    found = []
    for raw, suppress in [(a, False) for a in temporary] + [(a, True) for a in permanent]:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        detail = "permanent" if suppress else "temporary"
        found.append(Finding(address(text), suppress, None, True, detail))
    return found


def run(
    parse: Callable[[bytes], list[Finding]], data: bytes, *, repeats: int, bound: float
) -> Outcome:
    outcome = Outcome()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            with time_bound(bound):
                outcome.findings = parse(data)
        except Exception as exc:  # the bench reports every crash, whatever it is
            line = traceback.format_exception_only(exc)[-1].strip()
            outcome.crash = line[:200]
            outcome.findings = []
            times.append(time.perf_counter() - start)
            break
        times.append(time.perf_counter() - start)
    outcome.seconds = min(times)
    return outcome


def recipients_right(expected: list[Expected], got: Outcome) -> bool:
    want = {e.recipient for e in expected}
    have = got.recipients()
    if not want:
        return have <= {NOBODY}
    return have == want


def suppression_judged(expected: list[Expected]) -> bool:
    return all(e.dead is not None for e in expected)


def suppression_right(expected: list[Expected], got: Outcome) -> bool:
    return got.suppressed() == {e.recipient for e in expected if e.dead}


def server(name: str) -> str:
    stem = name.removesuffix(".eml")
    head, _sep, tail = stem.rpartition("-")
    return head if tail.isdigit() else stem


@dataclass(slots=True)
class Tally:
    """The figures of one parser over the corpus."""

    name: str
    files: int = 0
    recipients: int = 0
    suppress_files: int = 0
    suppress: int = 0
    wrongly_suppressed: int = 0  # files where an address Sisimai calls alive is suppressed
    missed_dead: int = 0  # files where an address Sisimai calls dead is not suppressed
    crashes: list[tuple[str, str]] = field(default_factory=list)
    times: list[tuple[float, str]] = field(default_factory=list)
    by_server: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    failing: set[str] = field(default_factory=set)

    def add(self, name: str, expected: list[Expected], got: Outcome) -> None:
        self.files += 1
        group = self.by_server[server(name)]
        group["files"] += 1
        self.times.append((got.seconds, name))
        if got.crash:
            self.crashes.append((name, got.crash))
        if recipients_right(expected, got):
            self.recipients += 1
        else:
            group["recipients"] += 1
            self.failing.add(name)
        if suppression_judged(expected):
            self.suppress_files += 1
            dead = {e.recipient for e in expected if e.dead}
            if got.suppressed() == dead:
                self.suppress += 1
            else:
                group["suppress"] += 1
                self.failing.add(name)
                self.wrongly_suppressed += bool(got.suppressed() - dead)
                self.missed_dead += bool(dead - got.suppressed())


def reason_agreement(
    expected: dict[str, list[Expected]], outcomes: dict[str, Outcome]
) -> tuple[int, int, Counter[tuple[str, str]], int, Counter[str]]:
    """(agree, compared, disagreements, findings with a reason, names outside the vocabulary)."""
    agree = compared = with_reason = 0
    confusion: Counter[tuple[str, str]] = Counter()
    strange: Counter[str] = Counter()
    for name, got in outcomes.items():
        entries = expected.get(name, [])
        for finding in got.findings:
            if finding.reason is not None:
                with_reason += 1
                if finding.reason not in VOCABULARY:
                    strange[finding.reason] += 1
        reasons: dict[str, set[str]] = defaultdict(set)
        for finding in got.findings:
            if finding.reason is not None:
                reasons[finding.recipient].add(finding.reason)
        for entry in entries:
            if entry.reason is None or entry.recipient not in got.recipients():
                continue
            compared += 1
            if entry.reason in reasons[entry.recipient]:
                agree += 1
            else:
                theirs = "/".join(sorted(reasons[entry.recipient])) or "-"
                confusion[(entry.reason, theirs)] += 1
    return agree, compared, confusion, with_reason, strange


def show(name: str, expected: list[Expected], outcomes: dict[str, Outcome]) -> None:
    print(f"== {name}")
    if name in OVERRIDES:
        print(f"   override: {OVERRIDES[name][0]}")
    for e in expected or []:
        print(f"   expected  {e.recipient}  dead={e.dead}  reason={e.reason} ({e.sisimai_reason})")
    if not expected:
        print("   expected  (no recipient)")
    for label, got in outcomes.items():
        marks = []
        if not recipients_right(expected, got):
            marks.append("RECIPIENTS")
        if suppression_judged(expected) and not suppression_right(expected, got):
            marks.append("SUPPRESS")
        print(f"   {label:<8}  {' '.join(marks) or 'ok'}  {got.seconds * 1000:.1f} ms")
        if got.crash:
            print(f"     crash: {got.crash}")
        for f in got.findings:
            flag = "" if f.counted else "  (not counted)"
            print(f"     {f.recipient}  {f.detail}{flag}")
        if not got.findings and not got.crash:
            print("     (no findings)")


def pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.1%})" if whole else "0/0"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--prefix", default="", help="only files whose name starts so")
    parser.add_argument("--repeats", type=int, default=3, help="parses per file, fastest kept")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per parse")
    parser.add_argument("--failures", action="store_true", help="detail every failing file")
    parser.add_argument("--show", metavar="FILE", help="detail one file, then stop")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    corpus = args.corpus
    if not (corpus / "expected.json").exists() and (corpus.parent / "expected.json").exists():
        corpus = corpus.parent
    if not (corpus / "expected.json").exists():
        print(f"error: no expected.json in {args.corpus}", file=sys.stderr)
        return 2
    expected = load_expected(corpus)
    files = sorted(p for p in (corpus / "sisimai").glob("*.eml") if p.name.startswith(args.prefix))
    if args.show:
        wanted = Path(args.show).name
        wanted = wanted if wanted.endswith(".eml") else wanted + ".eml"
        files = [p for p in files if p.name == wanted]
        if not files:
            print(f"error: no {wanted} in {corpus / 'sisimai'}", file=sys.stderr)
            return 2
    if all_failures is None:
        print("flufl.bounce is not installed (pip install flufl.bounce): its column is left out")

    parsers: dict[str, Callable[[bytes], list[Finding]]] = {"sender": sender_findings}
    if all_failures is not None:
        parsers["flufl"] = flufl_findings
    tallies = {label: Tally(label) for label in parsers}
    outcomes: dict[str, dict[str, Outcome]] = {label: {} for label in parsers}
    for path in files:
        data = path.read_bytes()
        entries = expected.get(path.name, [])
        for label, parse in parsers.items():
            got = run(parse, data, repeats=max(1, args.repeats), bound=args.timeout)
            outcomes[label][path.name] = got
            tallies[label].add(path.name, entries, got)

    if args.show:
        show(
            files[0].name,
            expected.get(files[0].name, []),
            {k: v[files[0].name] for k, v in outcomes.items()},
        )
        return 0

    print(
        f"corpus: {corpus} ({len(files)} files{', prefix ' + args.prefix if args.prefix else ''})"
    )
    print(RULES)
    print()
    print("Sisimai reason -> ours:")
    items = sorted(SISIMAI_REASONS.items())
    for left in range(0, len(items), 3):
        print("  " + "  ".join(f"{k:>15} -> {v:<20}" for k, v in items[left : left + 3]))
    print()
    width = 26
    header = f"{'':<{width}}" + "".join(f"{label:>24}" for label in tallies)
    print(header)

    def row(label: str, cell: Callable[[Tally], str]) -> None:
        print(f"{label:<{width}}" + "".join(f"{cell(t):>24}" for t in tallies.values()))

    row("right recipients", lambda t: pct(t.recipients, t.files))
    row("suppression agrees", lambda t: pct(t.suppress, t.suppress_files))
    row("  suppresses a live addr", lambda t: str(t.wrongly_suppressed))
    row("  misses a dead addr", lambda t: str(t.missed_dead))
    row("crashes", lambda t: str(len(t.crashes)))
    row("slowest file (ms)", lambda t: f"{max(t.times)[0] * 1000:.1f}" if t.times else "-")
    row(
        "median file (ms)",
        lambda t: f"{statistics.median(s for s, _ in t.times) * 1000:.2f}" if t.times else "-",
    )
    for label, tally in tallies.items():
        if tally.times:
            seconds, name = max(tally.times)
            print(f"slowest ({label}): {name} {seconds * 1000:.1f} ms")
    print()

    agree, compared, confusion, with_reason, strange = reason_agreement(
        expected, outcomes["sender"]
    )
    if with_reason == 0:
        print("reasons: not available (sender's findings carry no reason)")
    else:
        print(f"reasons (sender; entries whose recipient sender found): {pct(agree, compared)}")
        if strange:
            names = ", ".join(f"{k} {v}" for k, v in strange.most_common())
            print(f"  names outside the vocabulary: {names}")
        print("  most frequent disagreements (Sisimai's, mapped -> sender's):")
        for (theirs, ours), count in confusion.most_common(12):
            print(f"    {count:>4}  {theirs} -> {ours}")
    if "flufl" in tallies:
        print("reasons (flufl): not available (it finds addresses only)")

    for label, tally in tallies.items():
        for name, crash in tally.crashes:
            print(f"crash ({label}): {name}: {crash}")

    print()
    print(
        "Failures per server (sender recipients / suppression"
        + (", flufl recipients):" if "flufl" in tallies else "):")
    )
    sender_tally = tallies["sender"]
    flufl_tally = tallies.get("flufl")
    print(
        f"  {'server':<24} {'files':>5} {'recip':>6} {'suppr':>6}"
        + (f" {'flufl':>6}" if flufl_tally else "")
    )
    for group, counts in sorted(
        sender_tally.by_server.items(),
        key=lambda kv: (-kv[1]["recipients"] - kv[1]["suppress"], kv[0]),
    ):
        if not counts["recipients"] and not counts["suppress"]:
            continue
        extra = f" {flufl_tally.by_server[group]['recipients']:>6}" if flufl_tally else ""
        numbers = f"{counts['files']:>5} {counts['recipients']:>6} {counts['suppress']:>6}"
        print(f"  {group:<24} {numbers}{extra}")

    recipients_rate = sender_tally.recipients / sender_tally.files if sender_tally.files else 0.0
    suppress_rate = (
        sender_tally.suppress / sender_tally.suppress_files if sender_tally.suppress_files else 0.0
    )
    slowest = max(sender_tally.times)[0] if sender_tally.times else 0.0
    targets = [
        (
            f"right recipients >= {TARGET_RECIPIENTS:.0%}",
            recipients_rate >= TARGET_RECIPIENTS,
            f"{recipients_rate:.1%}",
        ),
        (
            f"suppression agreement >= {TARGET_SUPPRESS:.0%}",
            suppress_rate >= TARGET_SUPPRESS,
            f"{suppress_rate:.1%}",
        ),
        ("0 crashes", not sender_tally.crashes, str(len(sender_tally.crashes))),
        (
            f"no file slower than {TARGET_SLOWEST * 1000:.0f} ms",
            slowest <= TARGET_SLOWEST,
            f"{slowest * 1000:.1f} ms",
        ),
    ]
    print()
    print("Targets (sender):")
    for label, ok, value in targets:
        print(f"  {verdict(ok)}  {label:<34} {value}")

    if args.failures:
        print()
        for name in sorted(sender_tally.failing):
            show(name, expected.get(name, []), {k: v[name] for k, v in outcomes.items()})
    return 1 if args.check and not all(ok for _l, ok, _v in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
