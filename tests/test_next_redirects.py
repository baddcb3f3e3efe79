"""``next`` redirect targets that only leave the site after normalization are refused."""

from __future__ import annotations

import hashlib
import unicodedata
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer

from sender.compose.links import LinkSigner
from sender.compose.sites import check_next_path
from sender.config import LinkSettings
from sender.errors import LinkInvalid, UnsafePathError

BASE = "https://lms.example.com/login"
KEY = "k" * 32

# Each of these is a path on this site as written, and off-site once a browser or a
# framework normalizes it (NFKC, dot segments, percent-decoding, lookalike slashes).
NORMALIZED_OFF_SITE = [
    "/.//evil.example",
    "/\uff0fevil.example",  # FULLWIDTH SOLIDUS: NFKC makes it "//evil.example"
    "/\uff0e/\uff0fevil.example",  # fullwidth full stop and solidus
    "/\uff3cevil.example",  # FULLWIDTH REVERSE SOLIDUS: NFKC makes it "/\\evil.example"
    "/\ufe68evil.example",  # SMALL REVERSE SOLIDUS
    "/\u2215evil.example",  # DIVISION SLASH
    "/\u2044evil.example",  # FRACTION SLASH
    "/\u29f8evil.example",  # BIG SOLIDUS
    "/a/..//evil.example",
    "/%2e%2e//evil.example",
    "/%2E/%2Fevil.example",
    "/%2e%2e",
    "/./",
    "/..",
    "/a/../../evil.example",
    "/%2F%2Fevil.example",
    "/%EF%BC%8Fevil.example",  # the fullwidth solidus, percent-encoded
    "/.%2F%2Fevil.example",
    "/%5C%5Cevil.example",
    "/%0a/evil.example",
    "/\u00a0/evil.example",
    "/\u3000/evil.example",
]


@pytest.mark.parametrize("path", NORMALIZED_OFF_SITE)
def test_paths_that_normalize_off_site_are_refused(path: str) -> None:
    """Dot segments, NFKC lookalikes, encoded slashes and stray spaces are refused as next."""
    with pytest.raises(UnsafePathError) as info:
        check_next_path(path)
    assert info.value.field == "next"


@pytest.mark.parametrize("path", ["/.//evil.example", "/\uff0fevil.example"])
def test_normalized_off_site_next_refused_at_issue(path: str) -> None:
    """Issuing a login link with such a next path raises UnsafePathError."""
    signer = LinkSigner(LinkSettings(secret_keys=(KEY,), base_url=BASE))
    with pytest.raises(UnsafePathError):
        signer.issue("p-1", "c-1", next=path)


@pytest.mark.parametrize("path", ["/.//evil.example", "/\uff0fevil.example"])
def test_normalized_off_site_next_refused_at_verify(path: str) -> None:
    """A correctly signed token carrying such a next path is invalid."""
    forged = URLSafeTimedSerializer(
        [KEY], salt="sender.link.login", signer_kwargs={"digest_method": hashlib.sha256}
    ).dumps(["p-1", "c-1", 3600, path])
    signer = LinkSigner(LinkSettings(secret_keys=(KEY,), base_url=BASE))
    with pytest.raises(LinkInvalid, match="next path"):
        signer.verify(forged)


@pytest.mark.parametrize(
    "path", ["/courses/PY101", "/kurs/b\u00f8ker", "/a.b/c..d/.e", "/c?x=../..#../y"]
)
def test_ordinary_paths_with_dots_and_letters_stay_accepted(path: str) -> None:
    """Dots inside names, non-ASCII letters and dots in the query are not dot segments."""
    assert check_next_path(path) == path


_TRICKY = "/\\.%2eEfF5cC0a9:@?#ax \t\n\uff0f\uff3c\uff0e\u2215\u2044\ufe68\u3000\u00a0\u2024"


def _stays_on_origin(candidate: str) -> bool:
    base = urlsplit(BASE)
    resolved = urlsplit(urljoin(BASE, candidate))
    if (resolved.scheme, resolved.netloc) != (base.scheme, base.netloc):
        return False
    # Redirecting again to the resolved path (what a framework that normalizes does)
    # must stay here too.
    again = urlsplit(urljoin(BASE, resolved.path or "/"))
    return (again.scheme, again.netloc) == (base.scheme, base.netloc)


@given(st.text(alphabet=_TRICKY, max_size=24) | st.text(max_size=40))
@example("/.//evil.example")
@example("/\uff0fevil.example")
@example("/%2e%2e//evil.example")
def test_accepted_next_stays_on_the_base_origin(path: str) -> None:
    """Any accepted next, NFKC-normalized (and decoded) then resolved against base_url, stays."""
    try:
        check_next_path(path)
    except UnsafePathError:
        return
    decoded = unquote(unquote(path))
    for candidate in {path, decoded}:
        assert _stays_on_origin(unicodedata.normalize("NFKC", candidate)), candidate
