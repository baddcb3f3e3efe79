"""Template sets (subject, text, HTML) per locale, and the single-link rule.

A template set lives in ``<dir>/<name>/<locale>/`` as ``subject.txt``,
``body.txt`` and (optionally for user templates) ``body.html``. User
directories come first in the search path, so a user file overrides the
built-in file of the same path and everything else falls through.

Rendering is strict (an undefined variable is an error, before anything is
sent) and HTML is autoescaped. Every rendered message then passes the
single-link rule: all its links lead to one site, the login link's, because
mail that links to several sites is what spam filters punish. This is the only
module that imports jinja2.

A template set may have a ``template.toml`` beside its locale folders
(``<dir>/<name>/template.toml``, one per set, so every locale of a set is the same kind of
mail) declaring its stream::

    stream = "subscription"   # or "transactional", the default

Subscription mail carries its own unsubscribe URL (``{{ unsubscribe_url }}``, on the
sender's ``public_url`` host). The single-link rule lets through that exact URL, as it
does the login link, and no other URL on its host: it is sender's own, required by the
receivers' rules, and the same URL the ``List-Unsubscribe`` header names, so it adds no
site a filter could hold against the message. A subscription set must show it in its
text part.
"""

from __future__ import annotations

import html as htmllib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sender.compose.linkhosts import link_host_warnings
from sender.compose.sites import site_of
from sender.errors import LinkPolicyError, TemplateError, TemplateNotFound, UndefinedVariable
from sender.vocabulary import Stream

__all__ = [
    "BUILTIN_TEMPLATES",
    "LintFinding",
    "PageTemplates",
    "RenderedMessage",
    "Renderer",
    "find_link_problems",
    "lint_templates",
    "missing_variables",
    "sample_context",
]

PARTS = ("subject.txt", "body.txt", "body.html")
META = "template.toml"  # beside the locale folders: the set's stream
SAMPLE_UNSUBSCRIBE = "https://mail.example.net/u/SAMPLE"  # on another site than the sample link
DEFAULT_LOCALE = "en"
# Languages whose readers are best served by another template set than English.
_LOCALE_ALIASES = {"no": "nb", "nn": "nb"}


def _builtin_dir() -> Path:
    """``sender/templates`` inside a wheel; the repository's ``templates/`` when editable."""
    here = Path(__file__).resolve()  # sender/compose/render.py
    packaged = here.parents[1] / "templates"
    if packaged.is_dir():
        return packaged
    return here.parents[2] / "templates"


BUILTIN_TEMPLATES = _builtin_dir()


class PageTemplates:
    """sender's own HTML pages (the landing page, the admin pages), not mail.

    Always autoescaped and strict: every value in a page came from a request, a token or
    the outbox, and a missing one is a bug to see, not an empty string. Not sandboxed,
    unlike user mail templates: these ship with sender.
    """

    def __init__(self, directory: Path, /) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(directory), encoding="utf-8"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
        )

    def render(self, name: str, /, **context: object) -> str:
        """The page ``name`` (``landing.html``) filled with ``context``."""
        return self._env.get_template(name).render(**context)


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One template set rendered for one participant."""

    template: str
    locale: str
    subject: str
    text: str
    html: str | None


@dataclass(frozen=True, slots=True)
class LintFinding:
    """One problem in a template, as ``sender templates lint`` reports it.

    A ``warning`` (a link host spam filters score) does not stop the set from sending.
    """

    template: str  # name/locale/part, or "base_url" for the configured link base
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.template}: {'warning: ' if self.warning else ''}{self.message}"


_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")
_UNDEFINED_ATTR = re.compile(r"has no attribute '([^']+)'$")


class Renderer:
    """Finds, compiles (once) and renders template sets.

    ``allowed_link_domains`` are extra sites a message may link to besides the
    login link's (for instance the LMS's help centre on another domain).
    """

    def __init__(
        self,
        *,
        template_dirs: Sequence[Path | str] = (),
        allowed_link_domains: Iterable[str] = (),
        include_builtin: bool = True,
    ) -> None:
        dirs = [Path(d) for d in template_dirs]
        for directory in dirs:
            if not directory.is_dir():
                raise TemplateNotFound(f"template directory {directory} does not exist")
        if include_builtin:
            dirs.append(BUILTIN_TEMPLATES)
        self._dirs = tuple(dirs)
        # Sandboxed: user templates are configuration, not code, and must not reach Python.
        self._env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader([str(d) for d in dirs], encoding="utf-8"),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False
            ),
            undefined=jinja2.StrictUndefined,
            auto_reload=False,  # stat() per render is measurable on the bulk path
            keep_trailing_newline=True,
        )
        self._globals = dict(self._env.globals)
        self._allowed = frozenset(site_of(d) for d in allowed_link_domains)
        self._compiled: dict[tuple[str, str], tuple[jinja2.Template, ...]] = {}
        self._locales: dict[str, list[str]] = {}
        self._resolved: dict[tuple[str, str | None], str] = {}
        self._uses: dict[tuple[str, str, str], bool] = {}
        self._streams: dict[str, Stream] = {}

    @property
    def template_dirs(self) -> tuple[Path, ...]:
        return self._dirs

    @property
    def allowed_sites(self) -> frozenset[str]:
        return self._allowed

    def names(self) -> list[str]:
        """Every template set name in the search path."""
        found: set[str] = set()
        for directory in self._dirs:
            for child in directory.iterdir():
                if child.is_dir() and not child.name.startswith(("_", ".")):
                    found.add(child.name)
        return sorted(found)

    def locales(self, name: str, /) -> list[str]:
        """The locales that template set ``name`` exists in (in any directory).

        Looked up once per name: like compiled templates, the set is fixed for the
        renderer's life (auto_reload is off).
        """
        cached = self._locales.get(name)
        if cached is not None:
            return cached
        found: set[str] = set()
        for directory in self._dirs:
            base = directory / name
            if base.is_dir():
                found.update(
                    child.name
                    for child in base.iterdir()
                    if (child / "subject.txt").is_file() or (child / "body.txt").is_file()
                )
        self._locales[name] = sorted(found)
        return self._locales[name]

    def stream(self, name: str, /) -> Stream:
        """The stream template set ``name`` declares in its ``template.toml`` (read once).

        The first directory of the search path that has the file decides; without one
        the set is transactional. A bad file raises :class:`TemplateError` naming the file
        and the field.
        """
        cached = self._streams.get(name)
        if cached is not None:
            return cached
        stream = Stream.TRANSACTIONAL
        for directory in self._dirs:
            path = directory / name / META
            if path.is_file():
                stream = _read_stream(path, f"{name}/{META}")
                break
        self._streams[name] = stream
        return stream

    def resolve_locale(self, name: str, locale: str | None, /) -> str:
        """Pick the best available locale: exact, then language, then English."""
        key = (name, locale)
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        resolved = self._resolve_locale(name, locale)
        if len(self._resolved) < 4096:  # locale strings come from input; stay bounded
            self._resolved[key] = resolved
        return resolved

    def _resolve_locale(self, name: str, locale: str | None) -> str:
        available = self.locales(name)
        if not available:
            raise TemplateNotFound(f"no template named {name!r}", template=name)
        wanted = (locale or DEFAULT_LOCALE).strip().replace("_", "-").lower()
        language = wanted.split("-", 1)[0]
        for candidate in (wanted, language, _LOCALE_ALIASES.get(language), DEFAULT_LOCALE):
            if candidate in available:
                return candidate
        raise TemplateNotFound(
            f"template {name!r} has no {wanted!r} locale and no English fallback", template=name
        )

    def variables(self, name: str, locale: str, /) -> dict[str, frozenset[str]]:
        """Each part of ``name/locale`` (``name/locale/body.txt`` ...) with the variables
        it uses and does not set itself (jinja2's ``meta.find_undeclared_variables``).

        A missing required part raises :class:`TemplateNotFound`, a syntax error
        :class:`TemplateError`, each naming the file.
        """
        found: dict[str, frozenset[str]] = {}
        for part in PARTS:
            path = f"{name}/{locale}/{part}"
            parsed = self._parse(path, required=part != "body.html")
            if parsed is not None:
                found[path] = frozenset(jinja2.meta.find_undeclared_variables(parsed))
        return found

    def uses(self, name: str, locale: str, variable: str, /) -> bool:
        """Whether any part of ``name/locale`` uses ``variable`` (say, ``code``); cached."""
        key = (name, locale, variable)
        found = self._uses.get(key)
        if found is None:
            found = self._uses[key] = any(
                variable in names for names in self.variables(name, locale).values()
            )
        return found

    def _parse(self, path: str, *, required: bool) -> jinja2.nodes.Template | None:
        loader = self._env.loader
        assert loader is not None  # set in __init__
        try:
            source, _filename, _uptodate = loader.get_source(self._env, path)
        except jinja2.TemplateNotFound as exc:
            if not required:
                return None
            raise TemplateNotFound(f"{path} is missing", template=path) from exc
        try:
            return self._env.parse(source, name=path)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{path}, line {exc.lineno}: {exc.message}", template=path) from exc

    def _templates(self, name: str, locale: str) -> tuple[jinja2.Template, ...]:
        key = (name, locale)
        compiled = self._compiled.get(key)
        if compiled is None:
            loaded: list[jinja2.Template] = []
            for part in PARTS:
                path = f"{name}/{locale}/{part}"
                try:
                    loaded.append(self._env.get_template(path))
                except jinja2.TemplateNotFound as exc:
                    if part == "body.html":
                        continue
                    raise TemplateNotFound(f"{path} is missing", template=path) from exc
                except jinja2.TemplateSyntaxError as exc:
                    raise TemplateError(
                        f"{exc.filename or path}, line {exc.lineno}: {exc.message}", template=path
                    ) from exc
            compiled = self._compiled[key] = tuple(loaded)
        return compiled

    def render(
        self,
        name: str,
        /,
        *,
        locale: str | None,
        context: Mapping[str, object],
        link: str | None = None,
        unsubscribe: str | None = None,
    ) -> RenderedMessage:
        """Render a template set, then enforce the single-link rule around ``link``.

        ``unsubscribe`` is subscription mail's own unsubscribe URL: allowed as that exact
        URL, and required in the text part.
        Raises :class:`UndefinedVariable` naming the template and variable,
        and :class:`LinkPolicyError` when the message links to a foreign site.
        """
        resolved = self.resolve_locale(name, locale)
        templates = self._templates(name, resolved)
        values = {**self._globals, **context}  # what Template.render builds for each part
        outputs: list[str] = []
        for template in templates:
            try:
                outputs.append(_render(template, values, self._globals))
            except jinja2.UndefinedError as exc:
                variable = _undefined_variable(exc)
                raise UndefinedVariable(
                    f"{template.name} uses the variable {variable!r}, which was not given",
                    template=template.name,
                    variable=variable,
                ) from exc
            except jinja2.TemplateError as exc:
                raise TemplateError(f"{template.name}: {exc}", template=template.name) from exc
        subject = " ".join(outputs[0].split())
        rendered = RenderedMessage(
            template=name,
            locale=resolved,
            subject=subject,
            text=outputs[1],
            html=outputs[2] if len(outputs) > 2 else None,
        )
        if link is not None:
            problems = find_link_problems(
                rendered, link=link, allowed_sites=self._allowed, unsubscribe=unsubscribe
            )
            if problems:
                raise LinkPolicyError(
                    f"{name}/{resolved}: " + "; ".join(message for message, _ in problems),
                    template=f"{name}/{resolved}",
                    sites=tuple(sorted({site for _, site in problems if site})),
                )
        return rendered


def _render(
    template: jinja2.Template, values: dict[str, object], globals_: dict[str, object], /
) -> str:
    """``template.render(values)`` for ``values`` that already hold ``globals_`` (the
    environment's globals as a plain dict; :class:`Renderer` adds none per template).

    ``Template.render`` copies its globals (a ChainMap, slow to iterate) and the values
    into a new dict for every part, and iterates the ChainMap again for the context's
    global names; one dict per message, shared by its parts, costs a third of that (the
    parts cannot change it: ``{% set %}`` writes to the part's own context).
    """
    environment = template.environment
    context = environment.context_class(
        environment, values, template.name, template.blocks, globals=globals_
    )
    try:
        return template.environment.concat(template.root_render_func(context))
    except Exception:
        template.environment.handle_exception()


def _read_stream(path: Path, shown: str) -> Stream:
    """The ``stream`` of one ``template.toml``; one line naming the file and field if bad."""
    try:
        with path.open("rb") as handle:
            meta = tomllib.load(handle)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TemplateError(f"{shown}: not readable TOML ({exc})", template=shown) from exc
    unknown = sorted(set(meta) - {"stream"})
    if unknown:
        raise TemplateError(f"{shown}: unknown field {unknown[0]!r}", template=shown)
    value = meta.get("stream", Stream.TRANSACTIONAL.value)
    try:
        return Stream(value)
    except ValueError:
        names = " or ".join(f'"{s.value}"' for s in Stream)
        raise TemplateError(
            f"{shown}: stream must be {names}, not {str(value)[:40]!r}", template=shown
        ) from None


def _undefined_variable(exc: jinja2.UndefinedError) -> str:
    message = exc.message or ""
    match = _UNDEFINED_NAME.match(message) or _UNDEFINED_ATTR.search(message)
    return match.group(1) if match else message


# Finding URLs is on the bulk path, so every scan is anchored on a literal: str.find for
# "//" and "www." (URLs in any text, attributes included; an unanchored regex costs 20x),
# and a regex starting at "=" for attribute values (script and relative links lack "//").
_URL_MARKS = ("//", "www.", "WWW.")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_URL_REST = re.compile(r"[^\s<>\"'`()]*")
_ATTR_VALUE = re.compile(rb"""\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""")
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789:.-_")
_LINK_ATTRIBUTES = (  # an attribute name inside another ("src" in "srcset") is told apart
    b"href",
    b"src",
    b"srcset",
    b"action",
    b"formaction",
    b"background",
    b"poster",
    b"cite",
    b"data",
    b"xlink:href",
    b"longdesc",
    b"usemap",
    b"ping",
)
_HARMLESS_SCHEMES = frozenset({"mailto", "tel", "sms", "cid", "data"})


def _classify(url: str, *, in_attribute: bool) -> tuple[str | None, str | None]:
    """Return (site, problem) for one URL found in a message."""
    url = url.strip()
    if not url or url.startswith("#"):
        return None, None
    if url[:4].lower() == "www.":
        url = "http://" + url
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None, f"unreadable link {url[:60]!r}"
    scheme = parts.scheme.lower()
    if scheme in _HARMLESS_SCHEMES:
        return None, None
    if scheme in {"javascript", "vbscript"}:
        return None, f"script link {url[:60]!r}"
    if host and "." not in host and not in_attribute and not scheme:
        return None, None  # "//," or "A//B" in a name: no site is named without a dot
    if host:
        return site_of(host), None
    if in_attribute and not scheme:
        return None, f"relative link {url[:60]!r} cannot work in an e-mail"
    if scheme and scheme not in {"http", "https"}:
        return None, f"link with scheme {scheme!r} {url[:60]!r}"
    return None, None


def _run_before(text: str, end: int, allowed: frozenset[str], limit: int = 32) -> int:
    """Where the run of ``allowed`` characters that ends at ``end`` starts."""
    start = end
    while start > max(0, end - limit) and text[start - 1] in allowed:
        start -= 1
    return start


def _marks(text: str) -> list[tuple[int, str]]:
    found = []
    for needle in _URL_MARKS:
        index = text.find(needle)
        while index != -1:
            found.append((index, needle))
            index = text.find(needle, index + len(needle))
    found.sort()
    return found


def _text_urls(text: str) -> Iterable[str]:
    """URLs written out in text: ``scheme://...``, ``//host...`` and ``www.host...``."""
    end = 0
    for start, needle in _marks(text):
        if start < end:
            continue  # inside the previous URL
        if needle == "//":
            if start and text[start - 1] == ":":
                start = _run_before(text, start - 1, _SCHEME_CHARS)
        elif start and (text[start - 1].isalnum() or text[start - 1] in "./-_@"):
            continue  # "xwww." or a host like "a.www.example"
        rest = _URL_REST.match(text, start + len(needle))
        end = rest.end() if rest else start + len(needle)
        yield text[start:end]


def _attribute_urls(markup: str) -> Iterable[str]:
    """Values of link-carrying attributes (href, src, ...), entities decoded.

    Scans UTF-8 bytes: ``bytes.lower`` folds only ASCII and keeps every offset.
    """
    data = markup.encode("utf-8", "surrogatepass")
    lowered = data.lower()
    for name in _LINK_ATTRIBUTES:
        index = lowered.find(name)
        while index != -1:
            after = index + len(name)
            if not index or lowered[index - 1] not in _NAME_BYTES:
                match = _ATTR_VALUE.match(data, after)
                if match is not None:
                    raw = next(g for g in match.groups() if g is not None)
                    value = htmllib.unescape(raw.decode("utf-8", "replace"))
                    if name == b"srcset":
                        yield from (c.strip().split(" ", 1)[0] for c in value.split(","))
                    else:
                        yield value
            index = lowered.find(name, after)


def _urls(message: RenderedMessage) -> Iterable[tuple[str, bool]]:
    yield from ((url, False) for url in _text_urls(message.subject))
    yield from ((url, False) for url in _text_urls(message.text))
    if message.html is not None:
        yield from ((url, True) for url in _attribute_urls(message.html))
        yield from ((url, False) for url in _text_urls(htmllib.unescape(message.html)))


def find_link_problems(
    message: RenderedMessage,
    /,
    *,
    link: str,
    allowed_sites: frozenset[str] = frozenset(),
    unsubscribe: str | None = None,
) -> list[tuple[str, str | None]]:
    """Every breach of the single-link rule as ``(message, foreign site or None)``.

    The rule: all links lead to the login link's site (or an allowed one), and
    the login link is both clickable and visible as text in each body. Subscription
    mail's ``unsubscribe`` URL passes as that exact URL only, and must be in the text.
    """
    home = site_of(urlsplit(link).hostname or "")
    problems: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for url, in_attribute in _urls(message):
        if url in (link, unsubscribe):
            continue  # the login link (or sender's own unsubscribe URL) itself
        site, problem = _classify(url, in_attribute=in_attribute)
        if problem is not None and problem not in seen:
            seen.add(problem)
            problems.append((problem, None))
        if site is not None and site != home and site not in allowed_sites and site not in seen:
            seen.add(site)
            problems.append((f"links to a second site, {site} (only {home} is allowed)", site))
    if link not in message.text:
        problems.append(("the text part does not show the login link", None))
    if unsubscribe is not None and unsubscribe not in message.text:
        problems.append(("the text part does not show the unsubscribe link", None))
    if message.html is not None:
        escaped = htmllib.escape(link, quote=True)
        if message.html.count(escaped) + (message.html.count(link) if escaped != link else 0) < 2:
            problems.append(
                ("the HTML part must carry the login link as a link and as visible text", None)
            )
    return problems


def sample_context(locale: str, *, base_url: str) -> dict[str, object]:
    """Values that make any built-in template render, for previews and lint."""
    return {
        "name": "Kari Nordmann",
        "email": "kari@example.com",
        "link": base_url,
        "participant_id": "p-0001",
        "course_id": "PY101",
        "course_name": "Introduction to Python",
        "organization": "Example Academy",
        "expires_days": 14,
        "locale": locale,
        "code": "7KQ2-M9XD",
        # Calendar sets (invite, invite_update, invite_cancel); harmless to the others.
        "event_summary": "Python workshop",
        "event_description": "Bring your laptop.",
        "event_location": "Room 101, Main Building",
        "event_date": "2027-03-27",
        "event_start_time": "10:00",
        "event_end_date": "2027-03-27",
        "event_end_time": "12:00",
        "event_timezone": "Europe/Oslo",
        "event_changes": ["time"],
        # Subscription sets (reminder); harmless to the others.
        "unsubscribe_url": SAMPLE_UNSUBSCRIBE,
        "start_date": "2027-03-27",
    }


def lint_templates(
    renderer: Renderer,
    /,
    *,
    names: Iterable[str] | None = None,
    base_url: str = "https://lms.example.com/login?token=SAMPLE",
    extra: Mapping[str, object] | None = None,
) -> list[LintFinding]:
    """Render every template set in every locale with sample values and report problems.

    This is the single-link rule and the strict-variable check, run before
    any participant is involved. Every problem is listed, not only the first of a set:
    each part's syntax error, each variable no sample value covers, and each breach of
    the single-link rule. Warnings come first for ``base_url``'s host, and then for each
    link a set writes whose host a spam filter scores (:mod:`sender.compose.linkhosts`).
    """
    findings = [
        LintFinding("base_url", str(warning), warning=True)
        for warning in link_host_warnings(base_url)
    ]
    for name in names if names is not None else renderer.names():
        locales = renderer.locales(name)
        if not locales:
            findings.append(LintFinding(name, "no locale directory with subject.txt and body.txt"))
        for locale in locales:
            findings.extend(_lint_one(renderer, name, locale, base_url=base_url, extra=extra))
    return findings


def missing_variables(
    renderer: Renderer, name: str, locale: str, /, *, context: Mapping[str, object]
) -> list[tuple[str, str]]:
    """``(part, variable)`` for each variable ``name/locale`` needs and ``context`` lacks.

    Found by rendering each part that parses, each missing variable filled in turn, so
    one the set only tests (``{% if start_date is defined %}``) is not needed. At most
    64 per part.
    """
    found: list[tuple[str, str]] = []
    for part in PARTS:
        path = f"{name}/{locale}/{part}"
        try:
            if renderer._parse(path, required=False) is None:
                continue
            template = renderer._env.get_template(path)
        except (TemplateError, jinja2.TemplateError):
            continue  # lint reports the syntax error itself
        filled = dict(context)
        for _ in range(64):
            try:
                template.render(filled)
            except jinja2.UndefinedError as exc:
                variable = _undefined_variable(exc)
                found.append((path, variable))
                if variable in filled:  # an attribute of a given value: filling cannot help
                    break
                filled[variable] = ""
                continue
            except jinja2.TemplateError:
                pass  # not about variables: render() reports it
            break
    return found


def _lint_one(
    renderer: Renderer,
    name: str,
    locale: str,
    /,
    *,
    base_url: str,
    extra: Mapping[str, object] | None,
) -> list[LintFinding]:
    """Every problem of one template set in one locale."""
    context = sample_context(locale, base_url=base_url) | dict(extra or {})
    findings: list[LintFinding] = []
    for part in PARTS:  # every part's syntax error, not only the first part's
        path = f"{name}/{locale}/{part}"
        try:
            renderer._parse(path, required=part != "body.html")
        except TemplateError as exc:
            findings.append(LintFinding(exc.template or path, str(exc)))
    broken = bool(findings)
    missing = missing_variables(renderer, name, locale, context=context)
    findings.extend(
        LintFinding(part, f"unknown variable {variable!r}") for part, variable in missing
    )
    if broken:
        return findings  # a part is missing or does not parse: the set cannot render
    # Render with those filled, to find what else is wrong (links).
    filled = context | {variable: "" for _part, variable in missing}
    try:
        subscription = renderer.stream(name) is Stream.SUBSCRIPTION
        rendered = renderer.render(name, locale=locale, context=filled)
    except TemplateError as exc:
        if not isinstance(exc, UndefinedVariable):
            findings.append(LintFinding(exc.template or f"{name}/{locale}", str(exc)))
        return findings
    problems = find_link_problems(
        rendered,
        link=base_url,
        allowed_sites=renderer.allowed_sites,
        unsubscribe=str(filled["unsubscribe_url"]) if subscription else None,
    )
    findings.extend(LintFinding(f"{name}/{locale}", message) for message, _site in problems)
    warned: set[tuple[str, str]] = set()  # a host once per rule, however often it is linked
    for url, _ in _urls(rendered):
        for warning in link_host_warnings(url) if url != base_url else ():
            if (warning.host, warning.rule.name) not in warned:
                warned.add((warning.host, warning.rule.name))
                findings.append(LintFinding(f"{name}/{locale}", str(warning), warning=True))
    return findings
