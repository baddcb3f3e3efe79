"""Sites for the single-link rule, and safe ``next`` paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sender.compose.sites import check_next_path, site_of
from sender.errors import UnsafePathError

UNSAFE_PATHS = [
    "",
    "courses/1",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "https://evil.example/",
    "http:/evil.example",
    "javascript:alert(1)",
    "/%2F%2Fevil.example",
    "/%2f/evil.example",
    "/%252F%252Fevil.example",
    "/%5Cevil.example",
    "/\t/evil.example",
    "/%09/evil.example",
    "/x%0d%0aSet-Cookie:a=b",
    "/a b",
    "/\x00",
    "/" + "a" * 600,
]


@pytest.mark.parametrize("path", UNSAFE_PATHS)
def test_unsafe_next_paths_are_refused(path: str) -> None:
    """Every off-site or obfuscated redirect target is refused with the field named."""
    with pytest.raises(UnsafePathError) as info:
        check_next_path(path)
    assert info.value.field == "next"


@pytest.mark.parametrize(
    "path", ["/", "/courses/PY101", "/c?tab=1&x=%20y#top", "/files/r%C3%A9sum%C3%A9", "/a/b/c;v=1"]
)
def test_same_site_paths_are_accepted(path: str) -> None:
    """Ordinary relative paths, queries and fragments pass unchanged."""
    assert check_next_path(path) == path


@given(st.text(max_size=80))
def test_no_accepted_path_can_leave_the_site(path: str) -> None:
    """Whatever is accepted starts with one slash and names no host once decoded."""
    try:
        accepted = check_next_path(path)
    except UnsafePathError:
        return
    assert accepted.startswith("/")
    assert not accepted.startswith("//")
    assert "\\" not in accepted


@pytest.mark.parametrize(
    ("host", "site"),
    [
        ("lms.example.com", "example.com"),
        ("www.lms.example.co.uk", "example.co.uk"),
        ("LMS.Example.COM.", "example.com"),
        ("user.github.io", "user.github.io"),
        ("127.0.0.1", "127.0.0.1"),
        ("localhost", "localhost"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_site_is_the_registrable_domain(host: str, site: str) -> None:
    """Hosts reduce to their registrable domain using the Public Suffix List."""
    assert site_of(host) == site
