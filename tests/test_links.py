"""Personal login links: issue, verify, expire, rotate, revoke, and refuse tampering."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from sender.compose.links import LinkSigner, ReturnPathSigner, _stamp_digest
from sender.config import LinkSettings
from sender.errors import (
    ConfigurationError,
    InputError,
    LinkError,
    LinkExpired,
    LinkInvalid,
    LinkRevoked,
    UnsafePathError,
)
from sender.testing import ManualClock

OLD_KEY = "old-secret-key-0123456789abcdef"
NEW_KEY = "new-secret-key-fedcba9876543210"
BASE = "https://lms.example.com/login"


def make_signer(*keys: str, clock: ManualClock | None = None, **kwargs: object) -> LinkSigner:
    settings = LinkSettings(secret_keys=keys or (NEW_KEY,), base_url=BASE, **kwargs)  # type: ignore[arg-type]
    return LinkSigner(settings, clock=clock or ManualClock(now=1_800_000_000))


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock for the tests that move time: the one make_signer's default starts at."""
    return ManualClock(now=1_800_000_000)


def test_issued_link_verifies_to_its_claims() -> None:
    """A fresh link verifies and returns the participant, course, purpose and next path."""
    signer = make_signer()
    link = signer.issue("p-1001", "PY101", next="/courses/PY101")
    claims = signer.verify(link.url)
    assert (claims.participant_id, claims.course_id, claims.purpose, claims.next) == (
        "p-1001",
        "PY101",
        "login",
        "/courses/PY101",
    )
    assert claims.expires_at == link.expires_at
    assert claims.expires_at - claims.issued_at == timedelta(days=14)


def test_url_is_short_enough_for_webmail() -> None:
    """Typical ids give a URL under 200 characters, even with a next path and a stamp."""
    link = make_signer().issue(
        "p-1001234", "COURSE-2026-PY101", next="/courses/PY101/start", stamp="v1:abcdef0123456789"
    )
    assert len(link.url) < 200
    assert link.url.startswith(BASE + "?token=")


def test_base_url_query_is_kept() -> None:
    """A base URL that already has a query gets the token appended with '&'."""
    signer = LinkSigner(LinkSettings(secret_keys=(NEW_KEY,), base_url=BASE + "?lang=nb"))
    link = signer.issue("p-1", "c-1")
    assert link.url.startswith(BASE + "?lang=nb&token=")
    assert signer.verify(link.url).participant_id == "p-1"


def test_verify_accepts_url_token_or_pasted_text() -> None:
    """The bare token, the full URL and a URL pasted with whitespace all verify."""
    signer = make_signer()
    link = signer.issue("p-1", "c-1")
    for given_text in (link.token, link.url, f"  {link.url}\n"):
        assert signer.verify(given_text).participant_id == "p-1"


def test_link_expired_after_max_age(clock: ManualClock) -> None:
    """Past its 14-day default the link raises LinkExpired with the expiry time."""
    signer = make_signer(clock=clock)
    link = signer.issue("p-1", "c-1")
    clock.advance(timedelta(days=14).total_seconds() - 1)
    signer.verify(link.url)
    clock.advance(2)
    with pytest.raises(LinkExpired) as info:
        signer.verify(link.url)
    assert info.value.expired_at == link.expires_at
    assert info.value.kind == "expired"


def test_ttl_override_per_call(clock: ManualClock) -> None:
    """A per-call ttl is carried in the token and enforced at verify time."""
    signer = make_signer(clock=clock)
    link = signer.issue("p-1", "c-1", ttl=timedelta(hours=1))
    clock.advance(3601)
    with pytest.raises(LinkExpired):
        signer.verify(link.url)


def test_verify_max_age_can_only_shorten(clock: ManualClock) -> None:
    """A verifier's max_age shortens a token's life but never extends it."""
    signer = make_signer(clock=clock)
    link = signer.issue("p-1", "c-1", ttl=timedelta(days=1))
    clock.advance(7200)
    with pytest.raises(LinkExpired):
        signer.verify(link.url, max_age=timedelta(hours=1))
    clock.advance(timedelta(days=2).total_seconds())
    with pytest.raises(LinkExpired):
        signer.verify(link.url, max_age=timedelta(days=30))


def test_key_rotation_keeps_old_links_until_key_removed() -> None:
    """The newest key signs, older keys still verify, and a removed key's links die."""
    old_link = make_signer(OLD_KEY).issue("p-1", "c-1")
    rotated = make_signer(OLD_KEY, NEW_KEY)
    assert rotated.verify(old_link.url).participant_id == "p-1"
    new_link = rotated.issue("p-2", "c-1")
    assert make_signer(NEW_KEY).verify(new_link.url).participant_id == "p-2"
    with pytest.raises(LinkInvalid):
        make_signer(NEW_KEY).verify(old_link.url)


def test_other_purpose_never_verifies() -> None:
    """A token made for one purpose is invalid for another (the purpose is the salt)."""
    signer = make_signer()
    link = signer.issue("p-1", "c-1", purpose="rsvp")
    assert signer.verify(link.url, purpose="rsvp").purpose == "rsvp"
    with pytest.raises(LinkInvalid):
        signer.verify(link.url)


def test_changed_stamp_revokes_link() -> None:
    """A token issued under one stamp is revoked under any other, or under none."""
    signer = make_signer()
    link = signer.issue("p-1", "c-1", stamp="addr-hash:v1")
    assert signer.verify(link.url, stamp="addr-hash:v1").participant_id == "p-1"
    for other in ("addr-hash:v2", None):
        with pytest.raises(LinkRevoked) as info:
            signer.verify(link.url, stamp=other)
        assert info.value.kind == "revoked"


def test_unstamped_link_revoked_once_stamps_are_used() -> None:
    """A link issued before the LMS used stamps is revoked when a stamp is required."""
    signer = make_signer()
    link = signer.issue("p-1", "c-1")
    with pytest.raises(LinkRevoked):
        signer.verify(link.url, stamp="v1")


def test_stamp_is_not_readable_in_the_token() -> None:
    """The stamp itself never appears in the URL, only a short digest of it."""
    link = make_signer().issue("p-1", "c-1", stamp="kari@example.com")
    assert "kari" not in link.url
    assert "kari" not in URLSafeTimedSerializer(NEW_KEY).loads_unsafe(link.token)[1].__repr__()


@pytest.mark.parametrize("unsafe", ["//evil.example", "https://evil.example", "/\\evil", "x"])
def test_unsafe_next_refused_at_issue(unsafe: str) -> None:
    """Issuing a link whose next path leaves the site raises UnsafePathError."""
    with pytest.raises(UnsafePathError):
        make_signer().issue("p-1", "c-1", next=unsafe)


def test_unsafe_next_refused_at_verify() -> None:
    """A correctly signed token carrying an off-site next path is still invalid."""
    forged = URLSafeTimedSerializer(
        [NEW_KEY], salt="sender.link.login", signer_kwargs={"digest_method": hashlib.sha256}
    ).dumps(["p-1", "c-1", 3600, "//evil.example"])
    signer = LinkSigner(LinkSettings(secret_keys=(NEW_KEY,), base_url=BASE))
    with pytest.raises(LinkInvalid, match="next path"):
        signer.verify(forged)


@pytest.mark.parametrize(
    "text", ["", "garbage", "a.b.c", BASE, BASE + "?token=", "x" * 10_000, "?token=%ff%fe"]
)
def test_garbage_is_invalid(text: str) -> None:
    """Anything that is not one of our tokens raises LinkInvalid, never another error."""
    with pytest.raises(LinkInvalid):
        make_signer().verify(text)


_SIGNER = make_signer()
_TOKEN = _SIGNER.issue("p-1001", "PY101", next="/c/1", stamp="s").token
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=!~"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    position=st.integers(min_value=0, max_value=len(_TOKEN) - 1),
    replacement=st.sampled_from(_ALPHABET),
    action=st.sampled_from(["replace", "insert", "delete"]),
)
def test_any_change_to_a_token_is_rejected(position: int, replacement: str, action: str) -> None:
    """Replacing, inserting or deleting any one character makes the token fail to verify."""
    if action == "replace":
        if _TOKEN[position] == replacement:
            return
        tampered = _TOKEN[:position] + replacement + _TOKEN[position + 1 :]
    elif action == "insert":
        tampered = _TOKEN[:position] + replacement + _TOKEN[position:]
    else:
        tampered = _TOKEN[:position] + _TOKEN[position + 1 :]
    with pytest.raises(LinkError):
        _SIGNER.verify(tampered, stamp="s")


@given(st.text(max_size=300))
def test_arbitrary_input_only_raises_link_errors(text: str) -> None:
    """verify() on any string either verifies or raises a LinkError, nothing else."""
    with contextlib.suppress(LinkError):
        _SIGNER.verify(text)


def test_short_or_missing_keys_are_configuration_errors() -> None:
    """Weak or missing keys and a non-http base URL are refused when built."""
    with pytest.raises(ConfigurationError):
        LinkSettings(secret_keys=(), base_url=BASE)
    with pytest.raises(ConfigurationError):
        LinkSettings(secret_keys=("short",), base_url=BASE)
    with pytest.raises(ConfigurationError):
        LinkSigner(LinkSettings(secret_keys=(NEW_KEY,), base_url="javascript:alert(1)"))


@pytest.mark.parametrize(
    ("field", "args"), [("participant_id", ("", "c")), ("course_id", ("p", "a\nb"))]
)
def test_bad_ids_name_the_field(field: str, args: tuple[str, str]) -> None:
    """Empty ids or ids with control characters raise InputError naming the field."""
    with pytest.raises(InputError) as info:
        make_signer().issue(*args)
    assert info.value.field == field


# --- signed return paths ---------------------------------------------------------------

OLD, NEW = "return-path-key-old-0123456789", "return-path-key-new-0123456789"


def test_return_path_verifies_back_to_its_key() -> None:
    """A return path names its key, survives case folding, and fits a local part."""
    signer = ReturnPathSigner((NEW,), domain="Bounce.Example.com")
    address = signer.address("m21i3v9")
    local, _, domain = address.partition("@")
    assert domain == "bounce.example.com"
    assert local.startswith("bounces+m21i3v9-")
    assert len(local) < 64
    assert signer.verify(address) == "m21i3v9"
    assert signer.verify(address.upper()) == "m21i3v9"


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=200), st.characters(codec="ascii"))
def test_any_edit_of_a_return_path_is_refused(position: int, replacement: str) -> None:
    """Changing one character of key or signature never verifies: nobody can forge one."""
    signer = ReturnPathSigner((NEW,), domain="bounce.example.com")
    address = signer.address("m1x9")
    local = address.partition("@")[0]
    index = position % len(local)
    edited = local[:index] + replacement + local[index + 1 :] + "@bounce.example.com"
    if edited.lower() != address:
        assert signer.verify(edited) is None


def test_return_paths_survive_key_rotation_and_refuse_foreign_ones() -> None:
    """An old key's return path verifies after rotation; another domain or key does not."""
    old = ReturnPathSigner((OLD,), domain="bounce.example.com")
    rotated = ReturnPathSigner((OLD, NEW), domain="bounce.example.com")
    assert rotated.verify(old.address("m7")) == "m7"
    assert rotated.address("m7") != old.address("m7")
    stranger = ReturnPathSigner(("someone-elses-key-0123456789",), domain="bounce.example.com")
    assert rotated.verify(stranger.address("m7")) is None
    elsewhere = ReturnPathSigner((NEW,), domain="other.example.com")
    assert rotated.verify(elsewhere.address("m7")) is None
    assert rotated.owns("bounces+whatever@BOUNCE.example.com")


def test_bad_return_path_settings_are_named() -> None:
    """A non-domain or a key outside a-z0-9 is refused, naming the setting or field."""
    with pytest.raises(ConfigurationError, match="bounce domain"):
        ReturnPathSigner((NEW,), domain="not a domain")
    with pytest.raises(InputError, match="key"):
        ReturnPathSigner((NEW,), domain="bounce.example.com").address("M-1")


_IDS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=128
) | st.sampled_from(["p-1", "x" * 128, "ab" * 64, "æøå日本語" * 10])
_KEYS = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=32, max_size=64),
    min_size=1,
    max_size=3,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    participant=_IDS,
    course=_IDS,
    keys=_KEYS,
    purpose=st.sampled_from(["login", "rsvp", "unsubscribe", "a.b-c_9"]),
    next_path=st.none() | st.sampled_from(["/c/1", "/courses/" + "x" * 200, "/"]),
    stamp=st.none() | st.text(max_size=40),
    ttl_days=st.integers(min_value=1, max_value=3650),
    now=st.integers(min_value=0, max_value=4_000_000_000),
)
def test_tokens_are_byte_for_byte_those_itsdangerous_makes(
    participant: str,
    course: str,
    keys: list[str],
    purpose: str,
    next_path: str | None,
    stamp: str | None,
    ttl_days: int,
    now: int,
) -> None:
    """Signed with the HMAC directly, a token equals itsdangerous's own and still verifies."""
    clock = ManualClock(now=float(now) + 0.75)
    signer = LinkSigner(LinkSettings(secret_keys=tuple(keys), base_url=BASE), clock=clock)
    ttl = timedelta(days=ttl_days)
    link = signer.issue(participant, course, purpose=purpose, next=next_path, ttl=ttl, stamp=stamp)

    class Clocked(TimestampSigner):
        def get_timestamp(self) -> int:
            return now

    reference = URLSafeTimedSerializer(
        keys,
        salt=f"sender.link.{purpose}",
        signer=Clocked,
        signer_kwargs={"digest_method": hashlib.sha256},
    )
    expected: list[str | int] = [participant, course, ttl_days * 86400]
    if next_path is not None or stamp is not None:
        expected.append(next_path or "")
    if stamp is not None:
        expected.append(_stamp_digest(participant, stamp))
    assert link.token == reference.dumps(expected)
    claims = signer.verify(link.url, purpose=purpose, stamp=stamp)
    assert (claims.participant_id, claims.course_id, claims.next) == (
        participant,
        course,
        next_path,
    )
