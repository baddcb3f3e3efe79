"""Template sets per locale, strict variables, autoescaping and the single-link rule."""

from __future__ import annotations

import contextlib
import html
from pathlib import Path

import markupsafe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sender.compose.render import (
    LinkChecks,
    Renderer,
    find_link_problems,
    lint_templates,
    sample_context,
)
from sender.errors import LinkPolicyError, TemplateError, TemplateNotFound, UndefinedVariable
from sender.vocabulary import Stream

LINK = "https://lms.example.com/login?token=WyJwLTEiLCJjLTEiLDM2MDBd.aBcDeF.signature-here"
BUILTIN = Renderer()
CASES = [(name, locale) for name in BUILTIN.names() for locale in BUILTIN.locales(name)]


def context(locale: str = "en", **extra: object) -> dict[str, object]:
    return sample_context(locale, base_url=LINK) | extra


def bodies(name: str, locale: str, **extra: object) -> tuple[str, str]:
    """The text and HTML bodies of built-in template ``name`` in ``locale``, context + ``extra``."""
    rendered = BUILTIN.render(name, locale=locale, context=context(locale, **extra), link=LINK)
    assert rendered.html is not None
    return rendered.text, rendered.html


def write(root: Path, relative: str, content: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def test_builtins_cover_both_templates_in_four_locales() -> None:
    """invitation and get_link exist in en, nb, sv and ja."""
    for name in ("invitation", "get_link"):
        assert set(BUILTIN.locales(name)) >= {"en", "nb", "sv", "ja"}


@pytest.mark.parametrize(("name", "locale"), CASES)
def test_every_builtin_renders_strictly_and_passes_the_single_link_rule(
    name: str, locale: str
) -> None:
    """Each built-in set renders under StrictUndefined and links only to the login site
    (and, subscription mail, to its own unsubscribe URL, which its text shows)."""
    values = context(locale)
    subscription = BUILTIN.stream(name) is Stream.SUBSCRIPTION
    unsubscribe = str(values["unsubscribe_url"]) if subscription else None
    rendered = BUILTIN.render(
        name, locale=locale, context=values, link=LINK, unsubscribe=unsubscribe
    )
    if unsubscribe is not None:
        assert unsubscribe in rendered.text
    assert rendered.locale == locale
    assert rendered.subject
    assert "\n" not in rendered.subject
    assert LINK in rendered.text
    assert rendered.html is not None
    assert rendered.html.count(html.escape(LINK)) >= 2
    assert f'lang="{locale}"' in rendered.html
    if name in ("invitation", "get_link"):  # login mails show the sample's login code too
        assert "7KQ2-M9XD" in rendered.text
        assert "7KQ2-M9XD" in rendered.html


def test_japanese_subject_is_japanese() -> None:
    """The ja invitation's subject is written in Japanese."""
    rendered = BUILTIN.render("invitation", locale="ja", context=context("ja"), link=LINK)
    assert "招待" in rendered.subject


@pytest.mark.parametrize(
    ("asked", "resolved"),
    [("nb-NO", "nb"), ("no", "nb"), ("sv_SE", "sv"), ("JA", "ja"), ("de", "en"), (None, "en")],
)
def test_locale_falls_back_to_language_then_english(asked: str | None, resolved: str) -> None:
    """Regional and unknown locales resolve to the closest template set, else English."""
    assert BUILTIN.resolve_locale("invitation", asked) == resolved


def test_unknown_template_is_not_found() -> None:
    """Rendering a template set that exists nowhere raises TemplateNotFound."""
    with pytest.raises(TemplateNotFound):
        BUILTIN.render("nope", locale="en", context=context())


def test_html_is_autoescaped_and_text_is_not() -> None:
    """A name like <script> is text in HTML and unchanged in the plain part."""
    name = "<script>alert(1)</script> & Ø"
    rendered = BUILTIN.render(
        "invitation", locale="nb", context=context("nb", name=name), link=LINK
    )
    assert rendered.html is not None
    assert "<script>" not in rendered.html
    assert html.escape(name, quote=False) in rendered.html
    assert name in rendered.text


def test_missing_variable_names_template_and_variable(tmp_path: Path) -> None:
    """A template using an unknown variable fails before sending, naming both."""
    write(tmp_path, "welcome/en/subject.txt", "Hi {{ name }}")
    write(tmp_path, "welcome/en/body.txt", "{{ link }} from {{ teacher_name }}")
    renderer = Renderer(template_dirs=[tmp_path])
    with pytest.raises(UndefinedVariable) as info:
        renderer.render("welcome", locale="en", context=context(), link=LINK)
    assert info.value.variable == "teacher_name"
    assert info.value.template == "welcome/en/body.txt"
    assert "teacher_name" in str(info.value)


def test_user_directory_overrides_one_file_and_adds_templates(tmp_path: Path) -> None:
    """A user file replaces the built-in file; other files and new sets still resolve."""
    write(tmp_path, "invitation/en/subject.txt", "Welcome aboard, {{ name }}")
    write(tmp_path, "digest/en/subject.txt", "Digest")
    write(tmp_path, "digest/en/body.txt", "Sign in: {{ link }}\n")
    renderer = Renderer(template_dirs=[tmp_path])
    rendered = renderer.render("invitation", locale="en", context=context(), link=LINK)
    assert rendered.subject == "Welcome aboard, Kari Nordmann"
    assert rendered.html is not None
    assert LINK in rendered.text
    assert "digest" in renderer.names()
    digest = renderer.render("digest", locale="en", context=context(), link=LINK)
    assert digest.html is None


@pytest.mark.parametrize(
    "snippet",
    [
        '<a href="https://evil.example/x">more</a>',
        '<img src="https://tracker.example.net/p.gif">',
        "<p>See www.other.example.org for details</p>",
        '<div style="background:url(https://cdn.example.net/bg.png)"></div>',
        '<a href="//evil.example/x">x</a>',
        "<a href=https://evil.example/x>x</a>",
        '<a href="&#104;ttps://evil.example/">x</a>',
        '<A HREF="https://evil.example/">Ø</A>',
        '<img srcset="https://lms.example.com/a.png 1x, https://cdn.evil.example/b.png 2x">',
        "<p>Mer på https://evil.example/side og æøå</p>",
    ],
)
def test_foreign_link_in_html_is_refused(tmp_path: Path, snippet: str) -> None:
    """Any URL to a second site, in any HTML position or encoding, refuses the message."""
    write(tmp_path, "x/en/subject.txt", "Hi")
    write(tmp_path, "x/en/body.txt", "{{ link }}\n")
    write(tmp_path, "x/en/body.html", f'<a href="{{{{ link }}}}">{{{{ link }}}}</a>{snippet}')
    with pytest.raises(LinkPolicyError) as info:
        Renderer(template_dirs=[tmp_path]).render("x", locale="en", context=context(), link=LINK)
    assert info.value.sites
    assert "example.com" not in info.value.sites


def test_foreign_url_from_a_variable_in_text_is_refused(tmp_path: Path) -> None:
    """A CSV value that puts another site's URL into the text part is caught too."""
    write(tmp_path, "x/en/subject.txt", "Hi")
    write(tmp_path, "x/en/body.txt", "{{ link }}\nMaterials: {{ materials }}\n")
    renderer = Renderer(template_dirs=[tmp_path])
    with pytest.raises(LinkPolicyError, match=r"example\.org"):
        renderer.render(
            "x", locale="en", context=context(materials="https://files.example.org/a"), link=LINK
        )


def test_allow_list_lets_a_named_site_through(tmp_path: Path) -> None:
    """A domain on the allow-list may be linked besides the login site."""
    write(tmp_path, "x/en/subject.txt", "Hi")
    write(tmp_path, "x/en/body.txt", "{{ link }}\nHelp: https://help.example.org/faq\n")
    renderer = Renderer(template_dirs=[tmp_path], allowed_link_domains=["example.org"])
    assert renderer.render("x", locale="en", context=context(), link=LINK).text


def test_same_site_subdomain_and_mailto_are_fine(tmp_path: Path) -> None:
    """Another host on the site, mailto: and look-alike attribute names pass the rule."""
    write(tmp_path, "x/en/subject.txt", "Hi")
    write(tmp_path, "x/en/body.txt", "{{ link }}\nhttps://help.example.com/\n")
    write(
        tmp_path,
        "x/en/body.html",
        '<a href="{{ link }}">{{ link }}</a><a href="mailto:t@school.example.net">mail</a>'
        '<div data-href="section-2" style="background-color:#fff">Å</div>',
    )
    Renderer(template_dirs=[tmp_path]).render("x", locale="en", context=context(), link=LINK)


@pytest.mark.parametrize(
    ("html_body", "problem"),
    [
        ('<a href="{{ link }}">Sign in</a>', "visible text"),
        ('<a href="javascript:alert(1)">x</a>{{ link }}{{ link }}', "script link"),
        ('<a href="/relative">x</a><a href="{{ link }}">{{ link }}</a>', "relative link"),
    ],
)
def test_login_link_must_be_clickable_and_visible(
    tmp_path: Path, html_body: str, problem: str
) -> None:
    """The HTML must show the link as text too, and never carry script or relative links."""
    write(tmp_path, "x/en/subject.txt", "Hi")
    write(tmp_path, "x/en/body.txt", "{{ link }}\n")
    write(tmp_path, "x/en/body.html", html_body)
    with pytest.raises(LinkPolicyError, match=problem):
        Renderer(template_dirs=[tmp_path]).render("x", locale="en", context=context(), link=LINK)


def test_sandbox_blocks_python_internals(tmp_path: Path) -> None:
    """User templates cannot reach Python objects through dunder attributes."""
    write(tmp_path, "x/en/subject.txt", "{{ name.__class__.__mro__ }}")
    write(tmp_path, "x/en/body.txt", "{{ link }}")
    with pytest.raises(TemplateError):
        Renderer(template_dirs=[tmp_path]).render("x", locale="en", context=context())


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """A broken user template reports its path and line, not a jinja traceback."""
    write(tmp_path, "x/en/subject.txt", "Hi")
    write(tmp_path, "x/en/body.txt", "line one\n{% if %}\n")
    with pytest.raises(TemplateError, match=r"x/en/body\.txt.*line 2"):
        Renderer(template_dirs=[tmp_path]).render("x", locale="en", context=context())


def test_lint_passes_builtins_and_reports_user_problems(tmp_path: Path) -> None:
    """The standalone lint is clean on built-ins and names each broken user template."""
    assert lint_templates(BUILTIN) == []
    write(tmp_path, "bad/en/subject.txt", "Hi")
    write(tmp_path, "bad/en/body.txt", "{{ link }} https://evil.example/\n")
    write(tmp_path, "bad/nb/subject.txt", "Hei")
    write(tmp_path, "bad/nb/body.txt", "{{ link }} {{ kursleder }}\n")
    findings = lint_templates(Renderer(template_dirs=[tmp_path]), names=["bad"])
    messages = [str(finding) for finding in findings]
    assert any("bad/en" in m and "evil.example" in m for m in messages)
    assert any("bad/nb/body.txt" in m and "kursleder" in m for m in messages)


# ':' and '.' are left out so no generated name spells a URL (a link, rightly refused).
@given(st.text(alphabet=st.characters(exclude_characters=":."), min_size=1, max_size=40))
def test_any_name_is_text_in_html(name: str) -> None:
    """Whatever the participant's name, it reaches the HTML escaped, never as markup."""
    rendered = BUILTIN.render("get_link", locale="en", context=context(name=name), link=LINK)
    assert rendered.html is not None
    assert str(markupsafe.escape(name)) in rendered.html


@pytest.mark.parametrize("name", ["//", "A//B", "Kari // Nordmann", "//,"])
def test_double_slashes_in_a_name_are_no_link(name: str) -> None:
    """A name with "//" but no domain after it renders; it is no link to a second site."""
    rendered = BUILTIN.render("get_link", locale="en", context=context(name=name), link=LINK)
    assert rendered.html is not None
    assert str(markupsafe.escape(name)) in rendered.html


def test_a_protocol_relative_domain_in_text_is_still_a_second_site() -> None:
    """Text "//evil.example" still counts as a link to another site and is refused."""
    with pytest.raises(LinkPolicyError, match=r"evil\.example"):
        BUILTIN.render(
            "get_link", locale="en", context=context(name="Kari //evil.example"), link=LINK
        )


# --- calendar invitations: invite, invite_update, invite_cancel ------------------------

CALENDAR = ("invite", "invite_update", "invite_cancel")
LOCALES = ("en", "nb", "sv", "ja")
CALENDAR_CASES = [(name, locale) for name in CALENDAR for locale in LOCALES]
WHERE_LABEL = {"en": "Where:", "nb": "Sted:", "sv": "Plats:", "ja": "場所："}
EVENT_VARIABLES = (
    "event_summary",
    "event_location",
    "event_date",
    "event_start_time",
    "event_end_date",
    "event_end_time",
    "event_timezone",
)


def shown_date(iso: str, locale: str) -> str:
    """A date as the templates write it: day first in Norwegian, ISO elsewhere."""
    return ".".join(reversed(iso.split("-"))) if locale == "nb" else iso


def update_subject(locale: str, changes: list[str]) -> str:
    ctx = context(locale, event_changes=changes)
    return BUILTIN.render("invite_update", locale=locale, context=ctx, link=LINK).subject


@pytest.mark.parametrize("name", CALENDAR)
def test_calendar_templates_exist_in_four_locales(name: str) -> None:
    """invite, invite_update and invite_cancel exist in en, nb, sv and ja."""
    assert set(BUILTIN.locales(name)) >= set(LOCALES)
    assert lint_templates(BUILTIN, names=[name]) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_invite_update_subject_names_the_change(locale: str) -> None:
    """Time, place, both, and any other change each get their own one-line subject."""
    subjects = [
        update_subject(locale, changes)
        for changes in (["time"], ["place"], ["place", "time"], ["title"])
    ]
    assert all(subjects)
    assert len(set(subjects)) == 4
    assert all("Python workshop" in subject for subject in subjects)
    if locale == "en":
        words = [{"time", "place"} & set(subject.lower().split()) for subject in subjects]
        assert words == [{"time"}, {"place"}, {"time", "place"}, set()]


@pytest.mark.parametrize(("name", "locale"), CALENDAR_CASES)
def test_location_line_disappears_when_location_is_empty(name: str, locale: str) -> None:
    """An empty event_location drops the place line from both bodies."""
    for part in bodies(name, locale):
        assert WHERE_LABEL[locale] in part
        assert "Room 101" in part
    for part in bodies(name, locale, event_location=""):
        assert WHERE_LABEL[locale] not in part
        assert "Room 101" not in part


@pytest.mark.parametrize(("name", "locale"), CALENDAR_CASES)
def test_end_date_shown_only_when_it_differs(name: str, locale: str) -> None:
    """A one-day event shows its date once; one that ends later shows both dates."""
    start, end = shown_date("2027-03-27", locale), shown_date("2027-03-28", locale)
    for part in bodies(name, locale):
        assert part.count(start) == 1
        assert end not in part
    for part in bodies(name, locale, event_end_date="2027-03-28"):
        assert part.count(start) == 1
        assert part.count(end) == 1


@pytest.mark.parametrize(("name", "locale"), CALENDAR_CASES)
def test_event_summary_is_escaped_in_html(name: str, locale: str) -> None:
    """An event_summary with markup is text in body.html and unchanged in the text part."""
    summary = "<script>alert(1)</script> & Ø"
    rendered = BUILTIN.render(
        name, locale=locale, context=context(locale, event_summary=summary), link=LINK
    )
    assert rendered.html is not None
    assert "<script>" not in rendered.html
    assert html.escape(summary, quote=False) in rendered.html
    assert summary in rendered.text
    assert summary in rendered.subject


@pytest.mark.parametrize(
    ("name", "variable"),
    [(name, variable) for name in CALENDAR for variable in EVENT_VARIABLES]
    + [("invite_update", "event_changes")],
)
def test_missing_event_variable_is_named(name: str, variable: str) -> None:
    """Leaving out an event variable a calendar template uses raises UndefinedVariable."""
    ctx = context()
    del ctx[variable]
    with pytest.raises(UndefinedVariable) as info:
        BUILTIN.render(name, locale="en", context=ctx, link=LINK)
    assert info.value.variable == variable
    assert info.value.template is not None
    assert info.value.template.startswith(f"{name}/en/")


# The single-link rule by skeleton (issue 17): a message is checked by its skeleton's
# verdict only when that gives the full check's answer; these sets put values where
# they could make or hide a link, so that any gap in the proof shows as a difference.
ADVERSARIAL_SETS = {
    "seams": {  # every value in text, at seams with "w", "/", "." and attribute names
        "subject.txt": "Welcome {{ name }} to {{ course_name }}",
        "body.txt": "Hello {{ name }} ({{ email }}),\n{{ course_name }} ({{ course_id }})\n"
        "{{ link }}\nw{{ name }}w /{{ name }}/ {{ name }}www.evil.example {{ name }}."
        " {{ name }}//lms.example.com/x {{ name }}// {{ organization }}\n",
        "body.html": '<p lang="{{ locale }}">Hello {{ name }}, &amp; {{ course_name }}</p>'
        '<a href="{{ link }}">{{ link }}</a><span {{ name }} class="a">{{ email }}</span>'
        "<p>w{{ name }}w {{ name }}www.evil.example x{{ organization }}src</p>",
    },
    # One hazard each, so that the condition that catches it is the only one:
    "in_url": {"body.txt": "{{ link }}\nhttps://{{ course_id }}.example.com/\n"},
    "after_www": {"body.txt": "{{ link }}\nwww.x{{ name }}\n"},
    "in_src": {
        "body.html": '<a href="{{ link }}">{{ link }}</a>'
        '<img src="https://lms.example.com/{{ course_id }}.png">'
    },
    "assigned": {"body.html": '<a href="{{ link }}">{{ link }}</a><span {{ name }}="x"></span>'},
    "reference": {"body.html": '<a href="{{ link }}">{{ link }}</a>&#4{{ name }}&#47;evil.example'},
    "glued_link": {"body.txt": "{{ link }}.evil.org\n"},
    "branches": {  # the template itself changes with the values
        "subject.txt": "{{ name|upper }}",
        "body.txt": '{{ link }}\n{% if name == "Mallory" %}https://evil.example/{% endif %}\n'
        '{{ course_name|replace("x", "//") }} {{ name|urlize }}\n',
        "body.html": '<a href="{{ link }}">{{ link }}</a>{{ name|urlize }}'
        "{% for part in course_name.split() %}<i>{{ part }}</i>{% endfor %}",
    },
    "unsubscribe": {  # subscription mail: its own URL, alone and in an attribute
        "template.toml": 'stream = "subscription"\n',
        "subject.txt": "News for {{ name }}",
        "body.txt": "{{ link }}\n{{ name }}: {{ unsubscribe_url }}\n",
        "body.html": '<a href="{{ link }}">{{ link }}</a>{{ name }}'
        '<a href="{{ unsubscribe_url }}">stop</a>',
    },
}
TRICKY = [
    "http://evil.example",
    "www.evil.example",
    "WWW.EVIL.EXAMPLE",
    "href=x",
    "href",
    "src",
    "javascript:",
    "javascript:alert(1)",
    "//",
    "//evil.example",
    "&#47;&#47;evil.example",
    "7;",
    "evil.example/",
    "/evil.example",
    "Ann ",
    " ",
    "w",
    "ww",
    "ww.evil.example",
    "Andrew",
    "Bo w",
    ".",
    "/",
    ":",
    "Mallory",
    "Xiaoping",
    "Zoë Ærø 李",
    "a\u00a0b",
    "<b>",
    '"',
    "&",
    "zqx0q",
    "zqxlq",
    "{0}",
    "lms",
    "Kari Nordmann",
]
VALUES = st.one_of(
    st.text(alphabet=st.sampled_from(list("Kari Nordmanwé李-07")), min_size=1, max_size=12),
    st.sampled_from(TRICKY),
    st.text(alphabet=st.sampled_from(list("aAwW ./:=&#;<>\"'@-_07é\n")), min_size=1, max_size=12),
    st.lists(st.sampled_from(TRICKY), min_size=2, max_size=3).map("".join),
)
LINKS = st.sampled_from(
    [
        LINK,
        LINK + "&src=x",
        "https://lms.example.com/login?data=1",
        "https://lms.example.com",
        "https://lms.example.com/a(b)",
        "https://evil.example/login",
        "javascript:alert(1)//lms.example.com",
        "https://lms.example.com/www.x",
    ]
)
UNSUBSCRIBES = st.sampled_from(
    ["https://mail.example.net/u/T0K", "https://mail.example.net/u/T?href=x", LINK]
)


@pytest.fixture(scope="module")
def adversarial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Renderer, Renderer]:
    """The adversarial sets on disk: one renderer whose skeletons carry over between
    examples, and one whose messages are checked in full, by hand."""
    root = tmp_path_factory.mktemp("adversarial")
    for name in ADVERSARIAL_SETS:
        write_set(root, name)
    return Renderer(template_dirs=[root]), Renderer(template_dirs=[root])


def write_set(root: Path, name: str) -> None:
    """Adversarial set ``name`` in ``root``; a subject and text part if it has none."""
    files = {"subject.txt": "Hi {{ name }}", "body.txt": "{{ link }}\n"} | ADVERSARIAL_SETS[name]
    for file, content in files.items():
        write(root, f"{name}/{file}" if file == "template.toml" else f"{name}/en/{file}", content)


def outcome(
    renderer: Renderer, name: str, values: dict[str, object], link: str, unsubscribe: str | None
) -> tuple[object, ...]:
    """The rendered parts and the error ``render`` raised, if any."""
    try:
        rendered = renderer.render(
            name, locale="en", context=values, link=link, unsubscribe=unsubscribe
        )
    except LinkPolicyError as exc:
        return ("refused", str(exc), exc.sites)
    return ("sent", rendered.subject, rendered.text, rendered.html)


def full_outcome(
    renderer: Renderer, name: str, values: dict[str, object], link: str, unsubscribe: str | None
) -> tuple[object, ...]:
    """What ``render`` must answer: the full check's verdict on the rendered message."""
    rendered = renderer.render(name, locale="en", context=values)
    problems = find_link_problems(rendered, link=link, unsubscribe=unsubscribe)
    if problems:
        message = "; ".join(problem for problem, _ in problems)
        return ("refused", f"{name}/en: {message}", tuple(sorted({s for _, s in problems if s})))
    return ("sent", rendered.subject, rendered.text, rendered.html)


# Each condition of the proof, removed by hand, made this fail within 3000 examples.
@settings(max_examples=400)
@given(
    name=VALUES,
    course_name=VALUES,
    course_id=st.one_of(VALUES, st.just("PY101")),
    email=VALUES,
    organization=VALUES,
    link=LINKS,
    unsubscribe=UNSUBSCRIBES,
)
def test_skeleton_verdicts_are_the_full_checks(
    adversarial: tuple[Renderer, Renderer],
    name: str,
    course_name: str,
    course_id: str,
    email: str,
    organization: str,
    link: str,
    unsubscribe: str,
) -> None:
    """Whatever the values and the link, render answers as the full single-link check
    does, word for word, with skeletons cached from earlier messages."""
    fast, full = adversarial
    values = context(
        name=name,
        course_name=course_name,
        course_id=course_id,
        email=email,
        organization=organization,
        link=link,
        unsubscribe_url=unsubscribe,
    )
    for template in ADVERSARIAL_SETS:
        own = unsubscribe if template == "unsubscribe" else None
        assert outcome(fast, template, values, link, own) == full_outcome(
            full, template, values, link, own
        )


@pytest.mark.parametrize(
    ("template", "name", "by_skeleton"),
    [
        ("seams", "Kari Nordmann", True),
        ("seams", "Zoë <b>&amp; Ærø 李", True),
        ("seams", "Bo w", False),  # "Bo www.evil.example": its "www." is read now
        ("seams", "javascript:", False),  # "javascript://lms...": a script link
        ("seams", "www.evil.example", False),
        ("in_url", "Kari Nordmann", False),  # a skeleton with values in URLs: never used
        ("assigned", "Kari Nordmann", False),  # nor one with a value before "="
        ("reference", "Kari Nordmann", False),  # nor one with a value in "&#4..."
        ("glued_link", "Kari Nordmann", False),  # nor one whose link is glued to text
        ("branches", "Kari Nordmann", True),  # a value a filter changes is in as it is
        ("unsubscribe", "Kari Nordmann", True),
    ],
)
def test_skeleton_is_used_only_for_harmless_values(
    tmp_path: Path, template: str, name: str, by_skeleton: bool
) -> None:
    """A message counts as checked by its skeleton only when its values cannot make a
    link; the others are checked in full (``Renderer.link_checks``)."""
    write_set(tmp_path, template)
    renderer = Renderer(template_dirs=[tmp_path])
    own = "https://mail.example.net/u/T0K" if template == "unsubscribe" else None
    values = context(name=name, unsubscribe_url=own)
    with contextlib.suppress(LinkPolicyError):
        renderer.render(template, locale="en", context=values, link=LINK, unsubscribe=own)
    assert renderer.link_checks == LinkChecks(skeleton=int(by_skeleton), full=int(not by_skeleton))


def test_a_value_dependent_branch_is_refused_after_the_skeleton_passed(tmp_path: Path) -> None:
    """A template that links elsewhere for one name is refused for that name, though its
    skeleton (and every other name) passed."""
    write(tmp_path, "x/en/subject.txt", "Hi {{ name }}")
    write(tmp_path, "x/en/body.txt", "{{ link }}\n")
    write(
        tmp_path,
        "x/en/body.html",
        '<a href="{{ link }}">{{ link }}</a>'
        '{% if name == "Mallory" %}<a href="https://evil.example/">x</a>{% endif %}',
    )
    renderer = Renderer(template_dirs=[tmp_path])
    renderer.render("x", locale="en", context=context(name="Alice"), link=LINK)
    with pytest.raises(LinkPolicyError, match=r"evil\.example"):
        renderer.render("x", locale="en", context=context(name="Mallory"), link=LINK)
    assert renderer.link_checks == LinkChecks(skeleton=1, full=1)


def test_a_value_inside_a_url_is_checked_in_full(tmp_path: Path) -> None:
    """``https://{{ course_id }}.example.com/`` passes on the link's site and is refused
    when the value moves it to another; every such message is checked in full."""
    write(tmp_path, "x/en/subject.txt", "Hi")
    write(tmp_path, "x/en/body.txt", "{{ link }}\nhttps://{{ course_id }}.example.com/\n")
    renderer = Renderer(template_dirs=[tmp_path])
    renderer.render("x", locale="en", context=context(course_id="py101"), link=LINK)
    with pytest.raises(LinkPolicyError, match=r"evil\.org"):
        renderer.render("x", locale="en", context=context(course_id="a.evil.org/"), link=LINK)
    assert renderer.link_checks == LinkChecks(skeleton=0, full=2)


def test_a_set_that_filters_a_participants_value_stops_building_skeletons(
    tmp_path: Path,
) -> None:
    """``{{ name|title }}`` makes a skeleton per name: after 32 for that set its messages
    are checked in full, and another set still gets its skeleton."""
    write(tmp_path, "x/en/subject.txt", "Hi {{ name|title }}")
    write(tmp_path, "x/en/body.txt", "{{ link }}\n")
    write(tmp_path, "y/en/subject.txt", "Hi {{ name }}")
    write(tmp_path, "y/en/body.txt", "{{ link }}\n")
    renderer = Renderer(template_dirs=[tmp_path])
    for i in range(40):
        renderer.render("x", locale="en", context=context(name=f"ada {i}"), link=LINK)
    assert renderer.link_checks == LinkChecks(skeleton=32, full=8)
    renderer.render("y", locale="en", context=context(name="ada 40"), link=LINK)
    assert renderer.link_checks == LinkChecks(skeleton=33, full=8)


def test_a_value_that_looks_like_a_placeholder_is_rendered_and_checked_in_full(
    tmp_path: Path,
) -> None:
    """A filtered value is kept as it is in the skeleton; one spelled like the skeleton's
    own placeholders ("zqx999q") renders as any other name, checked in full, never a crash."""
    write(tmp_path, "x/en/subject.txt", "Hi {{ name|trim }}")
    write(tmp_path, "x/en/body.txt", "{{ link }}\n{{ name|trim }}\n")
    renderer = Renderer(template_dirs=[tmp_path])
    rendered = renderer.render("x", locale="en", context=context(name="zqx999q"), link=LINK)
    assert rendered.subject == "Hi zqx999q"
    assert rendered.text == f"{LINK}\nzqx999q\n"
    assert renderer.link_checks == LinkChecks(skeleton=0, full=1)


@pytest.mark.parametrize(("name", "locale"), CASES)
def test_builtin_sets_are_checked_by_their_skeleton(name: str, locale: str) -> None:
    """Participants of a built-in set are checked by its skeleton's verdict, whatever
    their names, codes and courses (``course_name`` the same as ``course_id`` or not),
    also where a set writes dates with filters (``event_date.split("-")``)."""
    renderer = Renderer()
    own = "https://mail.example.net/u/T0K" if name == "reminder" else None
    people = [
        {"name": "Kari Nordmann", "code": None},
        {"name": "Zoë O'Brien-Ærø", "code": "7KQ2-M9XD", "course_name": "PY101"},
        {"name": "李小龍", "code": "ABCD-EFGH", "participant_id": "p-3"},
        {"name": "Ann & Bob <Lee>", "code": None, "email": "ann@school.example.org"},
    ]
    for person in people:
        link = f"{LINK}{len(str(person))}"
        values = context(locale, link=link, unsubscribe_url=own, course_id="PY101", **person)
        rendered = renderer.render(name, locale=locale, context=values, link=link, unsubscribe=own)
        assert link in rendered.text
    assert renderer.link_checks == LinkChecks(skeleton=len(people), full=0)
