"""Tests for sender.compose.linkhosts and the warnings `sender templates lint` gives with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sender.cli import main
from sender.compose.linkhosts import link_host_warnings
from sender.compose.render import Renderer, lint_templates

pytestmark = pytest.mark.usefixtures("workdir")

KEY = "linkhosts-test-key-0123456789abcdef"


def rules(url: str) -> list[str]:
    return [warning.rule.name for warning in link_host_warnings(url)]


@pytest.mark.parametrize(
    ("url", "matched"),
    [
        ("https://learn.example.com/login", ["URI_TRY_3LD"]),  # the example
        ("https://LEARN.Example.COM/login", ["URI_TRY_3LD"]),  # hosts have no case
        ("https://learning.example.com/login", []),  # the rule excepts learn + ing
        ("https://learn.example.org/login", []),  # only .com and .net
        ("https://learn.com/login", []),  # two labels: no third-level domain
        ("https://learn.example.community/x", []),  # .com must end a label
        ("https://join-now.courses.example.net/x", ["URI_TRY_3LD"]),  # the word starts the label
        ("https://mycourses.example.com/x", ["URI_TRY_3LD"]),  # my + a letter
        ("https://myaccount.example.com/x", []),  # an exception of the rule
        ("https://my.example.com/x", []),  # my alone is not "my" + a letter
        ("https://checkout.example.com/x", []),
        ("https://action.example.com/x", []),
        ("https://start.list-manage.com/x", []),  # a later list-manage label is excepted
        ("https://lms.example.com/start.example.com", []),  # only the host counts
        ("www.start.example.com/x", []),  # read as http://www.start...: www comes first
        ("https://remove.example.com/u", ["URI_OPTOUT_3LD"]),
        ("https://out2.lists.example.net/u", ["URI_OPTOUT_3LD"]),
        ("https://outreach.example.com/u", []),  # the word must be the whole label
        ("http://192.0.2.10/login", ["NUMERIC_HTTP_ADDR", "NORMAL_HTTP_TO_IP"]),
        ("http://10.1.2.3/login", ["NUMERIC_HTTP_ADDR"]),  # private: not NORMAL_HTTP_TO_IP
        ("http://192.168.1.1:8080/x", ["NUMERIC_HTTP_ADDR"]),
        ("https://lms.example.com:8443/login", ["WEIRD_PORT"]),
        ("https://lms.example.com:443/login", []),
        ("http://lms.example.com:8080/login", []),
        ("https://bit.ly/3abc", ["__URL_SHORTENER"]),
        ("https://course.page.link/x", ["__URL_SHORTENER"]),
        ("mailto:learn@learn.example.com", []),  # not a web link
        ("https://[::1", []),  # unreadable: the single-link rule reports it
    ],
)
def test_each_rule_matches_what_spamassassin_matches(url: str, matched: list[str]) -> None:
    """Each link is matched by exactly the SpamAssassin URI rules its host and port trigger."""
    assert rules(url) == matched


def test_a_warning_says_the_rule_its_score_and_what_to_do() -> None:
    """The line names the host, the rule, its score and a host that passes."""
    (warning,) = link_host_warnings("https://learn.example.com/login?token=x")
    line = str(warning)
    assert line.startswith(
        "link host learn.example.com matches SpamAssassin's URI_TRY_3LD (+1.999)"
    )
    assert "learning.example.com passes" in line
    (shortener,) = link_host_warnings("https://bit.ly/3abc")
    assert "(+2.499 through SHORTENER_SHORT_IMG)" in str(shortener)
    assert "\n" not in line


def write_set(root: Path, name: str, *, text: str, html: str | None = None) -> None:
    """A real template set: subject, text and (optionally) HTML in English."""
    base = root / name / "en"
    base.mkdir(parents=True)
    (base / "subject.txt").write_text("Your course", encoding="utf-8")
    (base / "body.txt").write_text(text, encoding="utf-8")
    if html is not None:
        (base / "body.html").write_text(html, encoding="utf-8")


def test_lint_warns_about_hosts_a_template_links_to(tmp_path: Path) -> None:
    """Links a template writes on the login link's site, but on scored hosts, are warned once."""
    write_set(
        tmp_path,
        "welcome",
        text="Log in: {{ link }}\nHelp: https://learn.lms.example.com/help\n",
        html=(
            '<p><a href="{{ link }}">{{ link }}</a></p>'
            '<p><a href="https://learn.lms.example.com/help">help</a>'
            ' <a href="https://lms.example.com:8443/faq">faq</a></p>'
        ),
    )
    findings = lint_templates(Renderer(template_dirs=[tmp_path]), names=["welcome"])
    assert [finding.warning for finding in findings] == [True, True]
    assert [str(finding) for finding in findings] == [
        "welcome/en: warning: " + str(link_host_warnings("https://learn.lms.example.com/help")[0]),
        "welcome/en: warning: " + str(link_host_warnings("https://lms.example.com:8443/faq")[0]),
    ]


def test_lint_warns_about_the_base_url_host_once(tmp_path: Path) -> None:
    """A scored base_url host is one warning, not one per template set and locale."""
    findings = lint_templates(Renderer(), base_url="https://learn.example.com/login")
    warnings = [finding for finding in findings if finding.warning]
    assert [finding.template for finding in warnings] == ["base_url"]
    assert "URI_TRY_3LD" in warnings[0].message
    assert not [finding for finding in findings if not finding.warning]


def cli(*args: str, **env: str) -> Result:
    return CliRunner().invoke(
        main, list(args), env={"SENDER_SECRET_KEYS": KEY, **env}, catch_exceptions=False
    )


def test_cli_lint_warns_about_the_configured_base_url_and_passes() -> None:
    """`sender templates lint` reads base_url from the settings, warns, and still exits 0."""
    result = cli("templates", "lint", SENDER_BASE_URL="https://learn.example.com/login")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("base_url: warning: link host learn.example.com matches")
    assert "URI_TRY_3LD (+1.999)" in lines[0]
    assert lines[-1].endswith("template set(s) pass, 1 warning(s)")
    clean = cli("templates", "lint", SENDER_BASE_URL="https://learning.example.com/login")
    assert clean.exit_code == 0
    assert "warning" not in clean.stdout


def test_cli_lint_warnings_do_not_hide_problems(tmp_path: Path) -> None:
    """A set with a second site fails as before; the scored host is listed beside it."""
    write_set(
        tmp_path,
        "promo",
        text="{{ link }}\nhttp://192.0.2.10/offer\nhttps://bit.ly/3abc\n",
    )
    result = cli(
        "templates",
        "lint",
        "--templates",
        str(tmp_path),
        SENDER_BASE_URL="https://learning.example.com/login",
    )
    assert result.exit_code == 1
    out = result.stdout
    assert "promo/en: warning: link host 192.0.2.10 matches SpamAssassin's NUMERIC_HTTP_ADDR" in out
    assert "NORMAL_HTTP_TO_IP" in out
    assert "promo/en: warning: link host bit.ly matches SpamAssassin's __URL_SHORTENER" in out
    assert "promo/en: links to a second site" in out
    assert "2 problem(s) in" in result.stderr
