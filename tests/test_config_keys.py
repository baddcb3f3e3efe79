"""Every sender.toml key, every SENDER_* variable and every refusal of ``load_config``.

Each key has one row in ``KEYS``: the line that sets it, what else the file needs, and
what it changes in the loaded ``CliConfig``. The row is checked against the same file
without that line, so a key that silently stopped doing anything fails here. A key
added to ``_TOML_KEYS`` without a row fails ``test_every_key_has_a_case``.

Refusals already tested elsewhere are not repeated: out-of-range numbers and hostile
values through the CLI (test_config_errors.py), workers above concurrency and unknown
keys (test_config.py), concurrency over 256 (test_review_config.py), relay_timeouts = 0
(test_relay_stall.py), inbound limits below 1 (test_inbound_limits.py), an unusable key
file (test_home.py), short or missing link keys (test_links.py), and the example From
or base URL with a real server (test_placeholders.py).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

import sender.config
from sender.config import _TOML_KEYS, CliConfig, SesSettings, SmtpSecurity, load_config
from sender.errors import ConfigurationError
from sender.models import Address
from sender.storeurl import store_file
from sender.vocabulary import Stream

pytestmark = pytest.mark.usefixtures("workdir")

KEY = "config-keys-test-key-0123456789abcdef"
OTHER_KEY = "config-keys-older-key-0123456789abcd"
SMTP = 'smtp_url = "smtp://127.0.0.1:2525"'
PEM = b"-----BEGIN PRIVATE KEY-----\nnot checked when loading\n-----END PRIVATE KEY-----\n"
WHSEC = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
OLD_WHSEC = "whsec_b2xkZXItc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWY="
DKIM = 'dkim_domain = "skolen.example.org"\ndkim_selector = "s1"\ndkim_key = "dkim.pem"'


def load(toml: str | None = None, **overrides: object) -> CliConfig:
    """Write ``toml`` (if given) as ./sender.toml and load the configuration as the CLI does."""
    if toml is not None:
        Path("sender.toml").write_text(toml + "\n", encoding="utf-8")
    return load_config(overrides=overrides or None)


def here(path: Path) -> Path:
    """``path`` relative to the working directory, whether it was given absolute or not."""
    return path.absolute().relative_to(Path.cwd())


@dataclass(frozen=True)
class Key:
    """One sender.toml key: its line, what else the file needs, and what it changes."""

    line: str
    read: Callable[[CliConfig], object]
    expected: object
    context: str = ""  # lines the key needs to show its effect, present in the baseline too


KEYS: dict[str, Key] = {
    "home": Key('home = "state"', lambda c: here(c.state_dir), Path("state")),
    "from": Key(
        'from = "Skolen <post@skolen.example.org>"',
        lambda c: c.sender.from_address,
        Address(email="post@skolen.example.org", name="Skolen"),
    ),
    "reply_to": Key(
        'reply_to = "Kari <kari@skolen.example.org>"',
        lambda c: c.sender.reply_to,
        Address(email="kari@skolen.example.org", name="Kari"),
    ),
    "organization": Key(
        'organization = "Skolen på Ås"', lambda c: c.sender.organization, "Skolen på Ås"
    ),
    "base_url": Key(
        'base_url = "https://skolen.example.org/inn"',
        lambda c: c.sender.links.base_url,
        "https://skolen.example.org/inn",
    ),
    "secret_keys": Key(
        f'secret_keys = ["{OTHER_KEY}", "{KEY}"]',
        lambda c: (c.sender.links.secret_keys, c.generated_secret),
        ((OTHER_KEY, KEY), None),
    ),
    "link_ttl": Key('link_ttl = "3d"', lambda c: c.sender.links.max_age, timedelta(days=3)),
    "one_time_purposes": Key(
        'one_time_purposes = ["login", "Reset"]',
        lambda c: c.sender.links.one_time_purposes,
        ("login", "reset"),
    ),
    "lms_login_url": Key(
        'lms_login_url = "https://lms.example.org/sso?via=sender"',
        lambda c: c.sender.links.lms_login_url,
        "https://lms.example.org/sso?via=sender",
    ),
    "assertion_ttl": Key(
        'assertion_ttl = "30s"', lambda c: c.sender.links.assertion_ttl, timedelta(seconds=30)
    ),
    "smtp_url": Key(
        'smtp_url = "smtps://lms:pw@smtp.skolen.example.org"',
        lambda c: c.smtp and (c.smtp.security, c.smtp.host, c.smtp.port, c.smtp.username),
        (SmtpSecurity.TLS, "smtp.skolen.example.org", 465, "lms"),
    ),
    "transport": Key(
        'transport = "ses://eu-west-1?configuration_set=lms"',
        lambda c: c.smtp,
        SesSettings("eu-west-1", configuration_set="lms"),
    ),
    "maildir": Key('maildir = "mail"', lambda c: here(c.maildir), Path("mail")),
    "templates": Key(
        'templates = ["mine", "shared"]',
        lambda c: c.sender.template_dirs,
        (Path("mine"), Path("shared")),
    ),
    "allowed_link_domains": Key(
        'allowed_link_domains = ["skolen.example.org"]',
        lambda c: c.sender.allowed_link_domains,
        ("skolen.example.org",),
    ),
    "headers": Key(
        '[headers]\n"X-Course" = "c-1"', lambda c: c.sender.headers, (("X-Course", "c-1"),)
    ),
    "return_path": Key(
        'return_path = "bounces@skolen.example.org"',
        lambda c: c.sender.return_path,
        "bounces@skolen.example.org",
    ),
    "bounce_domain": Key(
        'bounce_domain = "b.skolen.example.org"',
        lambda c: c.sender.bounce_domain,
        "b.skolen.example.org",
    ),
    # The three dkim_* keys are only valid together, so each row sets all three.
    "dkim_domain": Key(DKIM, lambda c: c.sender.dkim_domain, "skolen.example.org"),
    "dkim_selector": Key(DKIM, lambda c: c.sender.dkim_selector, "s1"),
    "dkim_key": Key(DKIM, lambda c: c.sender.dkim_private_key, PEM),
    "pool_size": Key(
        "pool_size = 8", lambda c: (c.concurrency, c.smtp and c.smtp.pool_size), (8, 8), SMTP
    ),
    "max_messages_per_connection": Key(
        "max_messages_per_connection = 25",
        lambda c: c.smtp and c.smtp.max_messages_per_connection,
        25,
        SMTP,
    ),
    "max_connections": Key(
        "max_connections = 3", lambda c: c.smtp and c.smtp.max_connections, 3, SMTP
    ),
    "smtp_timeout": Key('smtp_timeout = "5s"', lambda c: c.smtp and c.smtp.timeout, 5.0, SMTP),
    "rate": Key("rate = 2.5", lambda c: c.limits.global_per_second, 2.5),
    "domain_rate": Key('domain_rate = "120/h"', lambda c: c.limits.domain_per_minute, 2.0),
    "concurrency": Key(
        "concurrency = 16", lambda c: (c.concurrency, c.smtp and c.smtp.pool_size), (16, 16), SMTP
    ),
    "workers": Key("workers = 3", lambda c: c.workers, 3, "concurrency = 8"),
    "relay_timeouts": Key("relay_timeouts = 5", lambda c: c.relay_timeouts, 5),
    "domain_rates": Key(
        '[domain_rates]\n"Skolen.example.org" = "5/min"',
        lambda c: dict(c.limits.domain_overrides),
        {"skolen.example.org": 5.0},
    ),
    "domain_groups": Key(
        '[domain_groups]\nskolen = ["a.example.org", "B.example.org"]',
        lambda c: [c.limits.domain_groups.get(d) for d in ("a.example.org", "b.example.org")],
        ["skolen", "skolen"],
    ),
    "retry_first": Key(
        'retry_first = "10m"',
        lambda c: (c.retry.first_retry, c.retry.max_interval),
        (600.0, 4 * 3600.0),
    ),
    "bounce_budget": Key("bounce_budget = 10", lambda c: c.bounces.budget, 10),
    "soft_bounce_limit": Key("soft_bounce_limit = 5", lambda c: c.bounces.soft_limit, 5),
    "sender_side_pause": Key("sender_side_pause = 9", lambda c: c.bounces.sender_side_pause, 9),
    "pause_single_sends": Key(
        "pause_single_sends = true", lambda c: c.bounces.pause_single_sends, True
    ),
    "validate": Key("validate = false", lambda c: c.validate, False),
    "dns_server": Key('dns_server = "127.0.0.1:5353"', lambda c: c.dns_server, "127.0.0.1:5353"),
    "trusted_authserv_ids": Key(
        'trusted_authserv_ids = ["MX.Example.org", " relay.example.org "]',
        lambda c: c.sender.trusted_authserv_ids,
        ("mx.example.org", "relay.example.org"),
    ),
    "retry_max_age": Key('retry_max_age = "1d"', lambda c: c.retry.max_age, 86400.0),
    "inbound_backlog": Key("inbound_backlog = 64", lambda c: c.inbound.backlog, 64),
    "inbound_max_sessions": Key("inbound_max_sessions = 50", lambda c: c.inbound.max_sessions, 50),
    "inbound_max_recipients": Key(
        "inbound_max_recipients = 10", lambda c: c.inbound.max_recipients, 10
    ),
    "store": Key(
        'store = "postgresql://lms@db.skolen.example.org:5433/sender"',
        lambda c: c.store,
        "postgresql://lms@db.skolen.example.org:5433/sender",
    ),
    "limits": Key(
        'limits = "redis://cache.skolen.example.org:6379/2"',
        lambda c: c.limiter,
        "redis://cache.skolen.example.org:6379/2",
    ),
    "public_url": Key(
        'public_url = "https://mail.skolen.example.org/"',
        lambda c: c.sender.public_url,
        "https://mail.skolen.example.org",
    ),
    "streams": Key(
        '[streams.subscription]\nfrom = "Påminnelser <remind@news.skolen.example.org>"\n'
        'bounce_domain = "b.news.skolen.example.org"\n'
        'dkim_domain = "news.skolen.example.org"\ndkim_selector = "n1"\ndkim_key = "dkim.pem"',
        lambda c: (
            c.sender.for_stream(Stream.SUBSCRIPTION).from_address.email,
            c.sender.for_stream(Stream.SUBSCRIPTION).bounce_domain,
            c.sender.for_stream(Stream.SUBSCRIPTION).dkim_domain,
            c.sender.for_stream(Stream.SUBSCRIPTION).dkim_private_key,
            c.sender.for_stream(Stream.TRANSACTIONAL).from_address.email,
        ),
        (
            "remind@news.skolen.example.org",
            "b.news.skolen.example.org",
            "news.skolen.example.org",
            PEM,
            "noreply@lms.example.com",
        ),
    ),
    "api_keys": Key(
        f'api_keys = ["{KEY}:links+runs"]',
        lambda c: [(k.key, sorted(k.scopes)) for k in c.api_keys],
        [(KEY, ["links", "runs"])],
    ),
    "ses_topics": Key(
        'ses_topics = ["arn:aws:sns:eu-west-1:123456789012:ses-bounces"]',
        lambda c: c.ses_topics,
        ("arn:aws:sns:eu-west-1:123456789012:ses-bounces",),
    ),
    "webhooks": Key(
        f'[[webhooks]]\nurl = "https://lms.example.org/hooks"\nsecret = "{WHSEC}"\n'
        'events = ["message.sent"]\ntimeout = "3s"',
        lambda c: [(w.url, w.secrets, sorted(w.events), w.timeout) for w in c.webhooks],
        [("https://lms.example.org/hooks", (WHSEC,), ["message.sent"], 3.0)],
    ),
}


def test_every_key_has_a_case() -> None:
    """Each key sender.toml accepts has exactly one row in KEYS, and no row is stale."""
    assert set(KEYS) - _TOML_KEYS == set(), "rows for keys sender.toml no longer accepts"
    assert _TOML_KEYS - set(KEYS) == set(), "keys without a row in KEYS: add one"


@pytest.mark.parametrize("name", sorted(KEYS))
def test_each_key_changes_the_loaded_config(name: str) -> None:
    """Setting the key in ./sender.toml changes what it controls, from its default."""
    case = KEYS[name]
    Path("dkim.pem").write_bytes(PEM)
    baseline = case.read(load(case.context))
    config = load(f"{case.context}\n{case.line}")
    assert config.config_file == Path("sender.toml")
    assert case.read(config) == case.expected
    assert baseline != case.expected


# --- What the rows above do not show --------------------------------------------------


def test_no_sender_toml_gives_the_defaults_and_a_generated_key() -> None:
    """Without sender.toml or SENDER_*: capture server, ./.sender, a key made in it, no pacing."""
    config = load()
    assert config.config_file is None
    assert config.smtp is None
    assert here(config.state_dir) == Path(".sender")
    assert config.maildir == config.state_dir / "maildir"
    assert config.generated_secret == config.state_dir / "secret.key"
    key = config.generated_secret.read_text(encoding="ascii").strip()
    assert config.sender.links.secret_keys == (key,)
    assert load().sender.links.secret_keys == (key,)
    assert (config.limits.global_per_second, config.limits.domain_per_minute) == (None, None)
    assert config.store == f"sqlite:///{config.state_dir}/outbox.sqlite3"


def test_the_outbox_follows_home_unless_a_store_is_given() -> None:
    """Without store, the outbox is outbox.sqlite3 in the home, wherever the home is."""
    assert store_file(load('home = "state"').store) == Path("state/outbox.sqlite3").absolute()


def test_a_relative_sqlite_store_in_sender_toml_is_next_to_it(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///outbox.db in a sender.toml elsewhere names a file next to that file;
    from SENDER_STORE it names one in the working directory; both become absolute."""
    project = workdir / "project"
    project.mkdir()
    (project / "sender.toml").write_text('store = "sqlite:///my%20outbox.db"\n', encoding="utf-8")
    config = load_config(config_file=project / "sender.toml")
    assert config.store == f"sqlite:///{project}/my%20outbox.db"
    assert store_file(config.store) == project / "my outbox.db"
    monkeypatch.setenv("SENDER_STORE", "sqlite:///here.db")
    assert store_file(load_config(config_file=project / "sender.toml").store) == workdir / "here.db"


def test_an_absolute_sqlite_store_stays_where_it_points(workdir: Path) -> None:
    """sqlite:////abs/path (four slashes) is that file, whatever folder sender.toml is in."""
    elsewhere = workdir / "elsewhere" / "outbox.sqlite3"
    assert store_file(load(f'store = "sqlite:///{elsewhere}"').store) == elsewhere


def test_the_maildir_follows_home_unless_given() -> None:
    """Without maildir, the Maildir is the home's maildir folder."""
    assert here(load('home = "state"').maildir) == Path("state/maildir")


def test_default_pacing_applies_only_with_an_smtp_server() -> None:
    """With smtp_url, 14 messages/s and 30/min per domain apply unless configured."""
    limits = load(SMTP).limits
    assert (limits.global_per_second, limits.domain_per_minute) == (14.0, 30.0)


@pytest.mark.parametrize("line", ["rate = 0", 'domain_rate = "0"', 'domain_rate = "0/s"'])
def test_a_zero_rate_means_no_limit(line: str) -> None:
    """rate = 0 and domain_rate = "0" lift that limit even when an SMTP server is configured."""
    limits = load(f"{SMTP}\n{line}").limits
    assert None in (limits.global_per_second, limits.domain_per_minute)


def test_secret_keys_may_be_one_comma_separated_string() -> None:
    """secret_keys = "old, new" is read like SENDER_SECRET_KEYS: oldest first, blanks dropped."""
    keys = load(f'secret_keys = "{OTHER_KEY}, {KEY},"').sender.links.secret_keys
    assert keys == (OTHER_KEY, KEY)


def test_templates_may_be_one_path() -> None:
    """templates = "mine" is one template folder."""
    assert load('templates = "mine"').sender.template_dirs == (Path("mine"),)


def test_whole_numbers_may_be_written_as_digit_strings() -> None:
    """workers = "2" is read as 2, as a flag's text would be."""
    assert load('workers = "2"\nconcurrency = "4"').workers == 2


def test_concurrency_sizes_the_smtp_pool_over_pool_size() -> None:
    """With both, concurrency is the SMTP pool size; pool_size is only its default."""
    config = load(f"{SMTP}\npool_size = 8\nconcurrency = 2")
    assert config.smtp is not None
    assert (config.concurrency, config.smtp.pool_size) == (2, 2)


def test_max_connections_may_be_in_the_smtp_url_and_sender_toml_wins() -> None:
    """The cap may come with the URL (``?max_connections=2``); sender.toml's overrides it,
    and neither means no cap."""
    url = 'smtp_url = "smtp://127.0.0.1:2525?max_connections=2"'
    assert (smtp := load(url).smtp) is not None
    assert smtp.max_connections == 2
    assert (smtp := load(f"{url}\nmax_connections = 5").smtp) is not None
    assert smtp.max_connections == 5
    assert (smtp := load(SMTP).smtp) is not None
    assert smtp.max_connections is None


def test_smtp_timeout_overrides_the_urls_timeout() -> None:
    """The URL's ?timeout= applies alone; smtp_timeout in sender.toml wins over it."""
    url = 'smtp_url = "smtp://127.0.0.1:2525?timeout=7"'
    timeouts = [load(toml).smtp for toml in (url, f'{url}\nsmtp_timeout = "2s"')]
    assert [smtp and smtp.timeout for smtp in timeouts] == [7.0, 2.0]


def test_a_long_first_retry_raises_the_longest_interval() -> None:
    """retry_first above the 4 h default cap becomes the cap, so the policy stays valid."""
    retry = load('retry_first = "6h"').retry
    assert (retry.first_retry, retry.max_interval) == (6 * 3600.0, 6 * 3600.0)


def test_paths_in_sender_toml_are_relative_to_its_folder(workdir: Path) -> None:
    """maildir, templates and dkim_key in a sender.toml elsewhere name places next to it."""
    project = workdir / "project"
    project.mkdir()
    (project / "dkim.pem").write_bytes(PEM)
    (project / "sender.toml").write_text(
        f'maildir = "mail"\ntemplates = "mine"\n{DKIM}\n', encoding="utf-8"
    )
    config = load_config(config_file=project / "sender.toml")
    assert config.maildir == project / "mail"
    assert config.sender.template_dirs == (project / "mine",)
    assert config.sender.dkim_private_key == PEM


# --- Environment variables ------------------------------------------------------------


@dataclass(frozen=True)
class Env:
    """One SENDER_* variable: its key, a value at each layer, and what each value gives."""

    key: str
    in_toml: str  # TOML literal
    in_env: str
    as_flag: object
    read: Callable[[CliConfig], object]
    from_toml: object
    from_env: object
    from_flag: object


ENV: dict[str, Env] = {
    "SENDER_HOME": Env(
        "home",
        '"toml-home"',
        "env-home",
        "flag-home",
        lambda c: here(c.state_dir),
        Path("toml-home"),
        Path("env-home"),
        Path("flag-home"),
    ),
    "SENDER_SECRET_KEYS": Env(
        "secret_keys",
        f'["{OTHER_KEY}"]',
        f" {OTHER_KEY} , {KEY} ",
        [KEY],
        lambda c: c.sender.links.secret_keys,
        (OTHER_KEY,),
        (OTHER_KEY, KEY),
        (KEY,),
    ),
    "SENDER_BASE_URL": Env(
        "base_url",
        '"https://toml.example.org/in"',
        "https://env.example.org/in",
        "https://flag.example.org/in",
        lambda c: c.sender.links.base_url,
        "https://toml.example.org/in",
        "https://env.example.org/in",
        "https://flag.example.org/in",
    ),
    "SENDER_SMTP_URL": Env(
        "smtp_url",
        '"smtp://toml.example.org"',
        "smtp+starttls://env.example.org",
        "smtps://flag.example.org:2465",
        lambda c: c.smtp and (c.smtp.host, c.smtp.port),
        ("toml.example.org", 25),
        ("env.example.org", 587),
        ("flag.example.org", 2465),
    ),
    "SENDER_FROM": Env(
        "from",
        '"Toml <post@toml.example.org>"',
        "post@env.example.org",
        "Flag <post@flag.example.org>",
        lambda c: c.sender.from_address,
        Address("post@toml.example.org", "Toml"),
        Address("post@env.example.org"),
        Address("post@flag.example.org", "Flag"),
    ),
    "SENDER_STORE": Env(
        "store",
        '"postgresql://lms@toml.example.org/sender"',
        "postgres://lms@env.example.org:5433/sender",
        "postgresql://flag.example.org/sender",
        lambda c: c.store,
        "postgresql://lms@toml.example.org/sender",
        "postgres://lms@env.example.org:5433/sender",
        "postgresql://flag.example.org/sender",
    ),
    "SENDER_LIMITS": Env(
        "limits",
        '"redis://toml.example.org:6379/0"',
        "redis://env.example.org:6379/1",
        "store",
        lambda c: c.limiter,
        "redis://toml.example.org:6379/0",
        "redis://env.example.org:6379/1",
        "store",
    ),
    "SENDER_API_KEYS": Env(
        "api_keys",
        f'["{OTHER_KEY}"]',
        f"{OTHER_KEY}:send, {KEY}",
        [KEY],
        lambda c: [(k.key, sorted(k.scopes)) for k in c.api_keys],
        [(OTHER_KEY, ["admin", "links", "runs", "send"])],
        [(OTHER_KEY, ["send"]), (KEY, ["admin", "links", "runs", "send"])],
        [(KEY, ["admin", "links", "runs", "send"])],
    ),
    "SENDER_LMS_LOGIN_URL": Env(
        "lms_login_url",
        '"https://toml.example.org/sso"',
        "https://env.example.org/sso",
        "https://flag.example.org/sso",
        lambda c: c.sender.links.lms_login_url,
        "https://toml.example.org/sso",
        "https://env.example.org/sso",
        "https://flag.example.org/sso",
    ),
    "SENDER_SES_TOPICS": Env(
        "ses_topics",
        '["arn:aws:sns:eu-west-1:123456789012:toml"]',
        "arn:aws:sns:eu-west-1:123456789012:env, arn:aws-cn:sns:cn-north-1:123456789012:b",
        ["arn:aws:sns:us-east-1:123456789012:flag"],
        lambda c: c.ses_topics,
        ("arn:aws:sns:eu-west-1:123456789012:toml",),
        ("arn:aws:sns:eu-west-1:123456789012:env", "arn:aws-cn:sns:cn-north-1:123456789012:b"),
        ("arn:aws:sns:us-east-1:123456789012:flag",),
    ),
    "SENDER_TRUSTED_AUTHSERV_IDS": Env(
        "trusted_authserv_ids",
        '["toml.example.org"]',
        "MX.env.example.org, ,relay.env.example.org",
        ["flag.example.org"],
        lambda c: c.sender.trusted_authserv_ids,
        ("toml.example.org",),
        ("mx.env.example.org", "relay.env.example.org"),
        ("flag.example.org",),
    ),
}


def test_every_environment_variable_has_a_case() -> None:
    """Each SENDER_* name config.py reads has a row in ENV, and each row maps to a key."""
    read = set(re.findall(r"\"(SENDER_[A-Z_]+)\"", inspect.getsource(sender.config)))
    assert read == set(ENV) | set(PAIRED)
    assert {case.key for case in ENV.values()} <= _TOML_KEYS


@pytest.mark.parametrize("var", sorted(ENV))
def test_an_environment_variable_takes_effect(var: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable alone replaces the default of its key."""
    case = ENV[var]
    default = case.read(load())
    monkeypatch.setenv(var, case.in_env)
    assert case.read(load()) == case.from_env != default


@pytest.mark.parametrize("var", sorted(ENV))
def test_an_environment_variable_beats_sender_toml(
    var: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sender.toml's value applies alone; the variable wins over it."""
    case = ENV[var]
    toml = f"{case.key} = {case.in_toml}"
    assert case.read(load(toml)) == case.from_toml
    monkeypatch.setenv(var, case.in_env)
    assert case.read(load(toml)) == case.from_env


@pytest.mark.parametrize("var", sorted(ENV))
def test_a_flag_beats_the_environment_variable(var: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An override (a flag, by TOML key) wins over the variable and sender.toml; None does not."""
    case = ENV[var]
    monkeypatch.setenv(var, case.in_env)
    toml = f"{case.key} = {case.in_toml}"
    assert case.read(load(toml, **{case.key: case.as_flag})) == case.from_flag
    assert case.read(load(toml, **{case.key: None})) == case.from_env


@pytest.mark.parametrize("var", sorted(ENV))
def test_an_empty_environment_variable_is_not_set(
    var: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VAR= (empty) leaves sender.toml's value in effect instead of blanking it."""
    case = ENV[var]
    monkeypatch.setenv(var, "")
    assert case.read(load(f"{case.key} = {case.in_toml}")) == case.from_toml


# Variables that only make sense together: SENDER_WEBHOOK_URL with SENDER_WEBHOOK_SECRET.
PAIRED = {"SENDER_WEBHOOK_URL": "webhooks", "SENDER_WEBHOOK_SECRET": "webhooks"}
TOML_WEBHOOK = f'[[webhooks]]\nurl = "https://toml.example.org/hooks"\nsecret = "{WHSEC}"'


def webhook_of(config: CliConfig) -> list[tuple[str, tuple[str, ...], int]]:
    return [(w.url, w.secrets, len(w.events)) for w in config.webhooks]


def test_the_webhook_variables_together_replace_sender_tomls_webhooks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SENDER_WEBHOOK_URL and SENDER_WEBHOOK_SECRET (comma-separated to rotate) make one
    endpoint for every event, in place of sender.toml's; a flag beats both."""
    assert webhook_of(load(TOML_WEBHOOK)) == [("https://toml.example.org/hooks", (WHSEC,), 0)]
    monkeypatch.setenv("SENDER_WEBHOOK_URL", "https://env.example.org/hooks")
    monkeypatch.setenv("SENDER_WEBHOOK_SECRET", f"{OLD_WHSEC}, {WHSEC}")
    from_env = [("https://env.example.org/hooks", (OLD_WHSEC, WHSEC), 0)]
    assert webhook_of(load()) == from_env
    assert webhook_of(load(TOML_WEBHOOK)) == from_env
    flag = [{"url": "https://flag.example.org/h", "secret": WHSEC}]
    assert webhook_of(load(TOML_WEBHOOK, webhooks=flag)) == [
        ("https://flag.example.org/h", (WHSEC,), 0)
    ]


@pytest.mark.parametrize("var", sorted(PAIRED))
def test_one_webhook_variable_without_the_other_is_refused(
    var: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half a webhook is an error naming the variable that is missing."""
    monkeypatch.setenv(var, WHSEC if var.endswith("SECRET") else "https://env.example.org/h")
    with pytest.raises(ConfigurationError) as caught:
        load(TOML_WEBHOOK)
    assert caught.value.setting == "webhooks"
    (missing,) = set(PAIRED) - {var}
    assert missing in str(caught.value)
    assert WHSEC not in str(caught.value)


def test_a_bad_webhook_secret_from_the_environment_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENDER_WEBHOOK_URL", "https://env.example.org/h")
    monkeypatch.setenv("SENDER_WEBHOOK_SECRET", "whsec_hunter2")
    with pytest.raises(ConfigurationError) as caught:
        load()
    assert caught.value.setting == "webhooks[1].secret"
    assert "hunter2" not in str(caught.value)


def test_webhook_secrets_are_not_in_the_configs_repr() -> None:
    assert WHSEC.removeprefix("whsec_") not in repr(load(TOML_WEBHOOK))


def test_a_relative_sender_home_is_relative_to_the_working_directory(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unlike home in sender.toml, a relative SENDER_HOME is not moved next to the file."""
    project = workdir / "project"
    project.mkdir()
    (project / "sender.toml").write_text('home = "state"\n', encoding="utf-8")
    assert load_config(config_file=project / "sender.toml").state_dir == project / "state"
    monkeypatch.setenv("SENDER_HOME", "state")
    assert load_config(config_file=project / "sender.toml").state_dir == workdir / "state"


def test_an_smtp_url_from_the_environment_turns_on_default_pacing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SENDER_SMTP_URL, like smtp_url, means real receivers: the default rates apply."""
    monkeypatch.setenv("SENDER_SMTP_URL", "smtp://127.0.0.1:2525")
    assert load().limits.global_per_second == 14.0


def test_an_explicit_environ_replaces_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """load_config(environ=...) reads only that mapping, not os.environ."""
    monkeypatch.setenv("SENDER_BASE_URL", "https://process.example.org/in")
    config = load_config(environ={"SENDER_BASE_URL": "https://given.example.org/in"})
    assert config.sender.links.base_url == "https://given.example.org/in"


# --- Refusals -------------------------------------------------------------------------

TEXT_KEYS = [
    "home",
    "from",
    "reply_to",
    "organization",
    "base_url",
    "smtp_url",
    "maildir",
    "return_path",
    "bounce_domain",
    "dkim_domain",
    "dkim_selector",
    "dkim_key",
    "dns_server",
    "store",
    "limits",
]

REFUSALS = [
    *(pytest.param(f"{key} = 5", key, id=f"{key}-not-text") for key in TEXT_KEYS),
    pytest.param('base_url = "https://a.example/\\r\\nX: y"', "base_url", id="two-lines"),
    pytest.param('from = "nobody"', "from", id="from-not-an-address"),
    pytest.param('reply_to = "kari@localhost"', "reply_to", id="reply_to-no-dot"),
    pytest.param("secret_keys = 5", "secret_keys", id="secret_keys-number"),
    pytest.param("secret_keys = [1, 2]", "secret_keys", id="secret_keys-numbers"),
    pytest.param("secret_keys = []", "secret_keys", id="secret_keys-empty-list"),
    pytest.param("templates = 5", "templates", id="templates-number"),
    pytest.param('templates = ["a", 1]', "templates", id="templates-mixed"),
    pytest.param('allowed_link_domains = "a.example"', "allowed_link_domains", id="domains-str"),
    pytest.param('headers = "X-A: b"', "headers", id="headers-not-a-table"),
    pytest.param('[headers]\n"X-A" = 1', "headers", id="header-not-text"),
    pytest.param("workers = 1.5", "workers", id="workers-fraction"),
    pytest.param("concurrency = true", "concurrency", id="concurrency-bool"),
    pytest.param('relay_timeouts = "three"', "relay_timeouts", id="relay_timeouts-word"),
    pytest.param("relay_timeouts = 1001", "relay_timeouts", id="relay_timeouts-over-1000"),
    pytest.param("concurrency = 128\nworkers = 65", "workers", id="workers-over-64"),
    pytest.param("inbound_max_recipients = 1.5", "inbound_max_recipients", id="inbound-fraction"),
    # int("²") raised ValueError, an internal error, though "²".isdigit() is true
    pytest.param('workers = "²"', "workers", id="workers-superscript"),
    pytest.param('inbound_backlog = "²"', "inbound_backlog", id="inbound-superscript"),
    pytest.param('link_ttl = "soon"', "link_ttl", id="link_ttl-word"),
    pytest.param("link_ttl = [1]", "link_ttl", id="link_ttl-list"),
    pytest.param('lms_login_url = "/sso"', "lms_login_url", id="lms_login_url-relative"),
    pytest.param(
        'lms_login_url = "javascript:alert(1)"', "lms_login_url", id="lms_login_url-scheme"
    ),
    pytest.param(
        'lms_login_url = "https://a@lms.example.org/"', "lms_login_url", id="lms_login_url-user"
    ),
    pytest.param('one_time_purposes = ["log in"]', "one_time_purposes", id="purpose-space"),
    pytest.param("one_time_purposes = 1", "one_time_purposes", id="purpose-number"),
    pytest.param('assertion_ttl = "1h"', "assertion_ttl", id="assertion_ttl-long"),
    pytest.param('smtp_timeout = "-1s"', "smtp_timeout", id="smtp_timeout-negative"),
    pytest.param("retry_first = 0", "retry_first", id="retry_first-zero"),
    pytest.param("trusted_authserv_ids = 5", "trusted_authserv_ids", id="authserv-number"),
    pytest.param("trusted_authserv_ids = [1]", "trusted_authserv_ids", id="authserv-numbers"),
    pytest.param('validate = "yes"', "validate", id="validate-text"),
    pytest.param("pause_single_sends = 1", "pause_single_sends", id="pause-number"),
    pytest.param('dkim_domain = "skolen.example.org"', "dkim", id="dkim-alone"),
    pytest.param(DKIM.replace("dkim.pem", "missing.pem"), "dkim_key", id="dkim_key-missing"),
    pytest.param('rate = "fast"', "rate", id="rate-word"),
    pytest.param('domain_rate = "fast"', "domain_rate", id="domain_rate-word"),
    # float("²") raised ValueError, an internal error, though "²".isdigit() is true
    pytest.param('domain_rate = "²/min"', "domain_rate", id="domain_rate-superscript"),
    pytest.param('[domain_groups]\ns = "a.example"', "domain_groups", id="group-not-a-list"),
    pytest.param('[domain_groups]\ns = [" "]', "domain_groups", id="group-blank-member"),
    pytest.param(
        'smtp_url = "smtp://h.example"\ntransport = "ses://eu-west-1"', "transport", id="both"
    ),
    pytest.param(
        'transport = "ses://eu-west-1?endpoint=http://h.example"', "transport", id="ses-far"
    ),
    pytest.param('transport = "ses://eu-west-1"\nworkers = 2', "workers", id="ses-workers"),
    pytest.param('smtp_url = "smtp://"', "smtp_url", id="smtp-no-host"),
    pytest.param('smtp_url = "smtp://h.example:99999"', "smtp_url", id="smtp-port-range"),
    pytest.param('smtp_url = "http://h.example"', "smtp_url", id="smtp-scheme"),
    pytest.param('smtp_url = "smtp://h.example?retries=3"', "smtp_url", id="smtp-unknown-param"),
    pytest.param('smtp_url = "smtp://lms@h.example"', "smtp_url", id="smtp-user-no-password"),
    pytest.param('smtp_url = "smtp://h.example?timeout=soon"', "timeout", id="smtp-timeout-word"),
    pytest.param('home = "taken"', "secret_keys", id="home-is-a-file"),
    pytest.param('store = "mysql://db.example/sender"', "store", id="store-scheme"),
    pytest.param('store = "outbox.sqlite3"', "store", id="store-bare-path"),
    pytest.param('store = "sqlite://"', "store", id="store-sqlite-no-path"),
    pytest.param('store = "sqlite:///"', "store", id="store-sqlite-empty-path"),
    pytest.param('store = "postgresql://db.example"', "store", id="store-no-database"),
    pytest.param('store = "postgresql://db.example:99999/x"', "store", id="store-port-range"),
    pytest.param('webhooks = "https://a.example"', "webhooks", id="webhooks-not-tables"),
    pytest.param(
        f'[[webhooks]]\nurl = "ftp://a.example"\nsecret = "{WHSEC}"',
        "webhooks[1].url",
        id="webhook-url-scheme",
    ),
    pytest.param('[[webhooks]]\nurl = "https://a.example"', "webhooks[1].secret", id="no-secret"),
    pytest.param(
        f'[[webhooks]]\nurl = "https://a.example"\nsecret = "{WHSEC}"\n'
        '[[webhooks]]\nurl = "https://b.example"\nsecret = ["whsec_short"]',
        "webhooks[2].secret",
        id="webhook-secret-short",
    ),
    pytest.param(
        f'[[webhooks]]\nurl = "https://a.example"\nsecret = "{WHSEC}"\nevents = ["sent"]',
        "webhooks[1].events",
        id="webhook-event-unknown",
    ),
    pytest.param(
        f'[[webhooks]]\nurl = "https://a.example"\nsecret = "{WHSEC}"\ntimeout = "soon"',
        "webhooks[1].timeout",
        id="webhook-timeout-word",
    ),
    pytest.param(
        f'[[webhooks]]\nurl = "https://a.example"\nsecret = "{WHSEC}"\nretries = 3',
        "webhooks[1].retries",
        id="webhook-unknown-field",
    ),
]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://lms:hunter2@db.example/",
        "postgresql://lms:hunter2@db.example:99999/sender",
        "mysql://lms:hunter2@db.example/sender",
        "postgresql://lms:hun/ter2@db.example",
        "lms:hunter2@db.example",
    ],
)
def test_a_bad_store_url_is_refused_without_its_password(url: str) -> None:
    """The refusal names the setting and both forms a store URL takes, and hides the password."""
    with pytest.raises(ConfigurationError) as caught:
        load(f'store = "{url}"')
    assert caught.value.setting == "store"
    assert "sqlite:///" in str(caught.value)
    assert "postgresql://" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "ter2" not in str(caught.value)


@pytest.mark.parametrize(("toml", "setting"), REFUSALS)
def test_a_bad_value_is_refused_naming_its_setting(toml: str, setting: str) -> None:
    """A bad value in sender.toml is a ConfigurationError whose setting names the key."""
    Path("dkim.pem").write_bytes(PEM)
    Path("taken").write_text("a file, not a folder\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        load(toml)
    assert caught.value.setting == setting, caught.value


# These refusals set no ``setting`` (or, for a domain_rates value, the singular key's
# name); their message is what names the problem, so that is what is checked.
MESSAGE_ONLY = [
    pytest.param('smtp_url = "smtp://h.example?verify=maybe"', "verify", id="smtp-verify"),
    pytest.param("domain_rates = 5", "domain_rates", id="domain_rates-not-a-table"),
    pytest.param("domain_groups = 5", "domain_groups", id="domain_groups-not-a-table"),
    pytest.param('[domain_rates]\n"a.example" = "fast"', "'fast'", id="domain_rates-word"),
    pytest.param("workers = ", "sender.toml is not valid TOML", id="not-toml"),
]


@pytest.mark.parametrize(("toml", "words"), MESSAGE_ONLY)
def test_a_bad_value_is_refused_naming_it_in_the_message(toml: str, words: str) -> None:
    """A bad value the loader cannot tie to one key is a ConfigurationError saying which."""
    with pytest.raises(ConfigurationError, match=re.escape(words)):
        load(toml)


def test_a_missing_config_file_is_refused_naming_it() -> None:
    """--config naming no file is a ConfigurationError naming the path."""
    with pytest.raises(ConfigurationError, match=re.escape("cannot read nowhere.toml")):
        load_config(config_file=Path("nowhere.toml"))


@pytest.mark.parametrize(
    ("var", "value", "setting"),
    [
        ("SENDER_SECRET_KEYS", " , ", "secret_keys"),
        ("SENDER_SECRET_KEYS", "short", "secret_keys"),
        ("SENDER_FROM", "nobody", "from"),
        ("SENDER_SMTP_URL", "http://h.example", "smtp_url"),
        ("SENDER_HOME", "a\nb", "home"),
        ("SENDER_STORE", "redis://127.0.0.1:6379/0", "store"),
        ("SENDER_STORE", "postgresql://a\nb/c", "store"),
        ("SENDER_LIMITS", "memcached://cache.example/0", "limits"),
    ],
)
def test_a_bad_environment_value_is_refused_naming_its_key(
    var: str, value: str, setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable's value goes through the same checks as its key in sender.toml."""
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError) as caught:
        load()
    assert caught.value.setting == setting
