"""API keys for `sender serve`: their format in settings, and matching them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sender.config import ApiKey, Scope, load_config, parse_api_keys
from sender.errors import ConfigurationError
from sender.service.auth import KeyRing

pytestmark = pytest.mark.usefixtures("workdir")

A = "a" * 20
B = "b" * 20


def test_a_key_alone_has_every_scope_and_scopes_follow_a_colon() -> None:
    """`KEY` may do everything; `KEY:links+send` only those two."""
    whole, narrow = parse_api_keys(f"{A}, {B}:links+send")
    assert whole.scopes == frozenset(Scope)
    assert narrow.scopes == {Scope.LINKS, Scope.SEND}
    assert (whole.name, narrow.name) == ("key 1", "key 2")


def test_api_keys_come_from_the_environment_or_sender_toml(workdir: Path) -> None:
    """SENDER_API_KEYS (comma-separated) and api_keys in sender.toml (a list) both work."""
    (workdir / "sender.toml").write_text(f'api_keys = ["{A}:runs"]\n', encoding="utf-8")
    from_file = load_config(config_file=workdir / "sender.toml", environ={})
    assert [(k.key, k.scopes) for k in from_file.api_keys] == [(A, {Scope.RUNS})]
    from_env = load_config(environ={"SENDER_API_KEYS": f"{B}:admin"})
    assert [k.scopes for k in from_env.api_keys] == [{Scope.ADMIN}]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("short", "at least 16"),
        (f"{A}:links+mail", "scope 'mail'"),
        (f"{A}:", "scope ''"),
        (f"{A},{A}", "listed twice"),
        (["ok" * 10, 3], "list of"),
    ],
)
def test_a_bad_api_key_setting_is_one_line_naming_the_setting_not_the_key(
    value: object, words: str
) -> None:
    """Each mistake is one ConfigurationError on `api_keys` that never repeats the key."""
    with pytest.raises(ConfigurationError) as caught:
        parse_api_keys(value)
    message = str(caught.value)
    assert caught.value.setting == "api_keys"
    assert words in message
    assert "\n" not in message
    assert A not in message


def test_the_key_ring_matches_only_a_whole_key() -> None:
    """The right key matches; a prefix, an extension or another key does not."""
    ring = KeyRing([ApiKey(A, name="key 1"), ApiKey(B, frozenset({Scope.LINKS}), "key 2")])
    key = ring.match(B)
    assert key is not None
    assert key.name == "key 2"
    assert not ring.allows(key, Scope.SEND)
    for presented in (A[:-1], A + "a", "", "c" * 20):
        assert ring.match(presented) is None


def test_a_key_is_never_in_its_repr() -> None:
    """Settings printed for debugging do not show API keys."""
    assert A not in repr(ApiKey(A))
    assert A not in repr(load_config(environ={"SENDER_API_KEYS": A}))
