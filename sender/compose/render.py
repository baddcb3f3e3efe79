"""Template sets (subject, text, HTML) per locale, and the single-link rule.

A template set lives in ``<dir>/<name>/<locale>/`` as ``subject.txt``,
``body.txt`` and (optionally for user templates) ``body.html``. User
directories come first in the search path, so a user file overrides the
built-in file of the same path and everything else falls through.

Rendering is strict (an undefined variable is an error, before anything is
sent) and HTML is autoescaped. Every rendered message then passes the
single-link rule: all its links lead to one site, the login link's, because
mail that links to several sites is what spam filters punish. The rule runs in full
once per template skeleton; a message takes the skeleton's verdict when it provably
changes nothing the rule reads (the proof is written out above :class:`_Skeletons`).
This is the only module that imports jinja2 (and its escaper, markupsafe).

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
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import escape  # jinja2's own: what its templates escape values with

from sender.compose.linkhosts import link_host_warnings
from sender.compose.sites import site_of
from sender.errors import LinkPolicyError, TemplateError, TemplateNotFound, UndefinedVariable
from sender.vocabulary import Stream

__all__ = [
    "BUILTIN_TEMPLATES",
    "LinkChecks",
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


# What a template does to a variable that a placeholder would not survive.
# (Not tests or comparisons: they only branch, and the skeleton's key holds what
# branches usually do on, which values are empty, equal or present.)
_TRANSFORMS = (jinja2.nodes.Filter, jinja2.nodes.Getattr, jinja2.nodes.Getitem)
_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")
_UNDEFINED_ATTR = re.compile(r"has no attribute '([^']+)'$")


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What one template set's parts say about their variables."""

    variables: Mapping[str, frozenset[str]]  # each part's path: what it uses, unset
    # what the set (not its layout) passes through a filter, method or index: see
    # _Skeletons.passes
    transformed: frozenset[str]


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
        self._skeletons = _Skeletons(self._allowed)
        self._analyses: dict[tuple[str, str], _Parsed] = {}
        self._checked_by_skeleton = 0
        self._checked_in_full = 0

    @property
    def template_dirs(self) -> tuple[Path, ...]:
        return self._dirs

    @property
    def allowed_sites(self) -> frozenset[str]:
        return self._allowed

    @property
    def link_checks(self) -> LinkChecks:
        """How many messages :meth:`render` has checked by a skeleton's verdict, and in full."""
        return LinkChecks(self._checked_by_skeleton, self._checked_in_full)

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
        return dict(self._parsed(name, locale).variables)

    def uses(self, name: str, locale: str, variable: str, /) -> bool:
        """Whether any part of ``name/locale`` uses ``variable`` (say, ``code``); cached."""
        key = (name, locale, variable)
        found = self._uses.get(key)
        if found is None:
            found = self._uses[key] = any(
                variable in names for names in self._parsed(name, locale).variables.values()
            )
        return found

    def _parsed(self, name: str, locale: str) -> _Parsed:
        """What the parts of ``name/locale`` say about their variables, from one parse of
        each; cached."""
        key = (name, locale)
        found = self._analyses.get(key)
        if found is None:
            variables: dict[str, frozenset[str]] = {}
            transformed: set[str] = set()
            for part in PARTS:
                path = f"{name}/{locale}/{part}"
                parsed = self._parse(path, required=part != "body.html")
                if parsed is None:
                    continue
                variables[path] = frozenset(jinja2.meta.find_undeclared_variables(parsed))
                for node in parsed.find_all(_TRANSFORMS):
                    inner = getattr(node, "node", None)
                    if isinstance(inner, jinja2.nodes.Name):
                        transformed.add(inner.name)
            found = self._analyses[key] = _Parsed(variables, frozenset(transformed))
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

        The rule runs once per skeleton (the set rendered with placeholders for the
        values) and a message whose values provably change nothing it reads takes the
        skeleton's verdict; any other is checked in full (:attr:`link_checks` counts
        both), so the answer is always :func:`find_link_problems`'s.
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
            if self._skeletons.passes(
                templates,
                (name, resolved),
                context,
                outputs,
                subject,
                link=link,
                unsubscribe=unsubscribe,
                transformed=self._parsed(name, resolved).transformed,
            ):
                self._checked_by_skeleton += 1
                return rendered
            self._checked_in_full += 1
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
        return environment.concat(template.root_render_func(context))
    except Exception:
        environment.handle_exception()


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
_URL_END = r"\s<>\"'`()"  # what ends a URL written in text (inside a regex class)
_URL_REST = re.compile(f"[^{_URL_END}]*")
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


def _text_url_spans(text: str) -> Iterator[tuple[int, int]]:
    """Where the URLs written out in text are: ``scheme://...``, ``//host...``, ``www.host...``."""
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
        yield start, end


def _text_urls(text: str) -> Iterable[str]:
    """URLs written out in text: ``scheme://...``, ``//host...`` and ``www.host...``."""
    return (text[start:end] for start, end in _text_url_spans(text))


def _attribute_spans(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """``(name, start, end)`` of each link-carrying attribute's raw value in UTF-8 ``data``.

    Scans bytes: ``bytes.lower`` folds only ASCII and keeps every offset.
    """
    lowered = data.lower()
    for name in _LINK_ATTRIBUTES:
        index = lowered.find(name)
        while index != -1:
            after = index + len(name)
            if not index or lowered[index - 1] not in _NAME_BYTES:
                match = _ATTR_VALUE.match(data, after)
                if match is not None:
                    start, end = match.span(match.lastindex or 0)
                    yield name, start, end
            index = lowered.find(name, after)


def _attribute_urls(markup: str) -> Iterable[str]:
    """Values of link-carrying attributes (href, src, ...), entities decoded."""
    data = markup.encode("utf-8", "surrogatepass")
    for name, start, end in _attribute_spans(data):
        value = htmllib.unescape(data[start:end].decode("utf-8", "replace"))
        if name == b"srcset":
            yield from (c.strip().split(" ", 1)[0] for c in value.split(","))
        else:
            yield value


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
    return _link_problems(
        message, link=link, home=home, allowed_sites=allowed_sites, unsubscribe=unsubscribe
    )


def _link_problems(
    message: RenderedMessage,
    /,
    *,
    link: str,
    home: str,
    allowed_sites: frozenset[str],
    unsubscribe: str | None,
) -> list[tuple[str, str | None]]:
    """:func:`find_link_problems` with the login link's site given: a skeleton's link is a
    placeholder without a host (:class:`_Skeletons`)."""
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


# The single-link rule per message, cheaply (issue 17). A bulk run renders one template
# set for thousands of participants whose values differ and whose skeleton does not, so
# the rule runs once on a skeleton (the set rendered with a placeholder for every string
# value) and each message only proves it is that skeleton with harmless values put in.
#
# Why that is sound. Let S be a skeleton's part and R the real message's, as rendered.
# The fast path requires R == sigma(S) as strings, where sigma puts each value (escaped
# as jinja2 escapes it, in HTML) where S has its placeholder; whatever the template did
# to get there (branches on values, filters, loops) is then irrelevant, and when it
# made anything else (``{% if name == "Bob" %}``, ``|upper``, ``|urlize``) the strings
# differ and the full check runs. Every construct the scanner reads is anchored on a
# literal ("//", "www.", "WWW.", an attribute name followed by "=") and extends over runs
# of character classes that the placeholders' characters (lowercase ASCII letters and
# digits) all belong to: a URL's rest, a scheme, an attribute's value, a named entity.
# So, given the checks on S in _placeholders_ok and _markup_ok and the checks on each
# value in _Skeletons.passes:
#
# - no URL or link attribute value that S shows touches a placeholder (else the run
#   would have reached into it), so S's URLs are R's, unchanged;
# - an ordinary value has no "//", "www." (any case) or "=", so it holds no anchor and
#   gives no attribute name an "="; at its seams (_seams_ok): after S's "/" it does not
#   start with "/", before S's "/" it does not end with "/" or ":" (no "//", no scheme
#   glued to S's "//"); after S's "w"/"W" it does not start with "w", "W" or ".", and
#   before S's "w", "W" or "." it ends in a letter or digit other than "w"/"W" or in one
#   of "./-_@", so no "www." forms across the seam, and one in S's text that the
#   placeholder's letter hid ("xwww." is no URL) stays hidden; and S has no "name=" or
#   whitespace and "=" right after a placeholder, so no attribute name at a value's end,
#   or across its end, or hidden behind its placeholder, gets a value in R (a ":" or
#   single "/" in a value, as in "10:00" or "Europe/Oslo", is then harmless: the
#   scanner reads ":" only right before "//", and a scheme run reaching into a value
#   would have reached into its placeholder);
# - the login link and the unsubscribe URL stand alone in S (the characters around them
#   end a URL: whitespace, <, >, quotes, a backtick, parentheses; or they are a whole
#   link attribute's value), and their value is one whole URL (``scheme://`` then only
#   URL characters, no attribute name followed by "="), so the scanner reads in R
#   exactly that URL where S had the placeholder, and skips it as the rule does;
# - in HTML, no character reference in S runs into a placeholder (an "&" before it is
#   closed by ";", whitespace or "<"), and an escaped value's "&" starts only a whole
#   reference, so R's text with references decoded is sigma(S's) with the raw values;
# - no two placeholders touch, so each seam above has template text on its other side.
#
# Then R has the URLs S has (and the link and unsubscribe URL where S has their
# placeholders), S shows the link and unsubscribe URL where the rule wants them, and R
# shows them there too: if S passes the rule, R does. A skeleton that fails it, or
# breaks any condition, is not used: the message gets the full check, which also words
# its problems. Values that are not strings (``expires_days``, ``event_changes``), and
# strings the set passes through a filter or method (``Renderer._transformed``), are
# rendered as they are, so they are template text to the proof, and are part of the
# skeleton's key, as is which string values are equal (``course_name`` is ``course_id``
# unless given) and which are empty. The key only picks the skeleton to compare with:
# a wrong pick fails the comparison, so soundness never rests on it.
_PLACEHOLDER_TEXT = r"zqx(?:[0-9]+|l|u)q"
_PLACEHOLDER = re.compile(_PLACEHOLDER_TEXT)
_PLACEHOLDER_BYTES = re.compile(_PLACEHOLDER_TEXT.encode())
_PLACEHOLDER_SPLIT = re.compile(f"({_PLACEHOLDER_TEXT})")
_LINK_PLACEHOLDER = "zqxlq"
_UNSUBSCRIBE_PLACEHOLDER = "zqxuq"
_URL_STOP = re.compile(f"[{_URL_END}]")  # what ends _URL_REST
_URL_STOP_BYTES = frozenset(b" \t\n\r\f\v<>\"'`()")  # ASCII ones: a subset, so stricter
_NOT_INERT = re.compile(r"=|//|www\.", re.IGNORECASE)
# A link the scanner reads whole: a scheme ("." would let "www." start it), "//", and
# only URL characters; the group is what names its site.
_WHOLE_URL = re.compile(f"([A-Za-z][A-Za-z0-9+-]{{0,30}}://[^/?#{_URL_END}]*)[^{_URL_END}]*")
_ATTRIBUTE_NAMES = tuple(name.decode() for name in _LINK_ATTRIBUTES)
_ASSIGNED_AFTER = re.compile(rb"[a-z:]*\s*=")  # an attribute name's tail, then "="
_HTML_SPECIAL = re.compile(r"[&<>\"']")  # what markupsafe's escape changes; most values lack it
_REFERENCE_ENDS = frozenset(b"\t\n\f <;")  # what ends html.unescape's reference match
_MAX_SKELETONS = 256  # keys are few per run; odd contexts must not grow this unbounded
# Skeletons per template set and locale: a set that filters a participant's own value
# ({{ name|title }}) makes a key per message; after this many it is checked in full,
# and the other sets keep their room in the cache.
_MAX_SHAPES = 32
_Pattern = tuple[tuple[str, ...], tuple[tuple[int, int], ...]]  # pieces; (piece, value)


@dataclass(frozen=True, slots=True)
class LinkChecks:
    """How :meth:`Renderer.render` has checked the single-link rule so far: by a cached
    skeleton's verdict (cheap), or in full."""

    skeleton: int
    full: int


@dataclass(frozen=True, slots=True)
class _Skeleton:
    """A template set rendered with placeholders, which passed the rule and every
    condition above; each part as its pieces, with values to put in some of them."""

    subject: _Pattern
    text: _Pattern
    html: _Pattern | None
    used: tuple[int, ...]  # values that appear (ordinary ones, then link, unsubscribe)
    seams: tuple[tuple[int, str, str], ...]  # (value, what precedes it, what follows it)


def _slot(placeholder: str, ordinary: int) -> int:
    """The value index a placeholder stands for: ordinary ones first, then the link and
    the unsubscribe URL."""
    tag = placeholder[3:-1]
    return ordinary if tag == "l" else ordinary + 1 if tag == "u" else int(tag)


def _placeholders_ok(view: str, ordinary: int, seams: dict[int, tuple[str, str]]) -> bool:
    """Whether ``view`` (a text the URL scanner reads) keeps its placeholders clear of its
    URLs and of each other, and the link's alone; collects the seam rules for values."""
    spans = list(_text_url_spans(view))
    previous = -1
    for match in _PLACEHOLDER.finditer(view):
        start, end = match.span()
        if start == previous or any(s < end and start < e for s, e in spans):
            return False
        previous = end
        slot = _slot(match.group(), ordinary)
        before, after = view[start - 1 : start], view[end : end + 1]
        if slot >= ordinary:
            if any(c and _URL_STOP.match(c) is None for c in (before, after)):
                return False
        else:
            head, tail = seams.get(slot, ("", ""))
            if before and before in "wW/":
                head += "w" if before in "wW" else "/"
            if after and after in "wW./":
                tail += "/" if after == "/" else "w"
            seams[slot] = (head, tail)
    return True


def _whole_link(url: str) -> bool:
    """Whether the scanner reads ``url`` (the login link or unsubscribe URL) standing alone
    as exactly one URL, and no link attribute in it gets a value (``...&src=x``)."""
    if _WHOLE_URL.fullmatch(url) is None:
        return False
    markup = str(escape(url)) if "&" in url else url  # nothing else in a URL is escaped
    index = markup.find("=")
    while index != -1:
        if markup[:index].rstrip().lower().endswith(_ATTRIBUTE_NAMES):
            return False
        index = markup.find("=", index + 1)
    return True


def _seams_ok(value: str, before: str, after: str) -> bool:
    """Whether ``value`` can sit between what precedes and follows its placeholder (as
    :func:`_placeholders_ok` noted it) without making or unmaking a "www." or "//"."""
    head, tail = value[0], value[-1]
    if ("w" in before and head in "wW.") or ("/" in before and head == "/"):
        return False
    if "w" in after and (tail in "wW" or not (tail.isalnum() or tail in "./-_@")):
        return False  # a "www." after it: S's letter hid it from the scanner, so must R's
    return not ("/" in after and tail in "/:")


def _markup_ok(markup: str) -> bool:
    """Whether raw HTML keeps its placeholders out of link attributes (but for the link's
    own, whole), out of character references, and before no ``name=``."""
    data = markup.encode("utf-8", "surrogatepass")
    lowered = data.lower()
    spans = list(_attribute_spans(data))
    previous = 0
    for match in _PLACEHOLDER_BYTES.finditer(data):
        start, end = match.span()
        if start == previous and start:
            return False
        tail = data[previous:start]
        reference = tail.rfind(b"&")
        if reference != -1 and not any(c in _REFERENCE_ENDS for c in tail[reference + 1 :]):
            return False
        previous = end
        if _ASSIGNED_AFTER.match(lowered, end):
            return False
        whole = match.group() in (b"zqxlq", b"zqxuq")
        for name, s, e in spans:
            if (
                s < end
                and start < e
                and not (whole and name != b"srcset" and (s, e) == (start, end))
            ):
                return False
        if whole and any(
            0 <= i < len(data) and data[i] not in _URL_STOP_BYTES for i in (start - 1, end)
        ):
            return False
    return True


def _pattern(part: str, ordinary: int) -> _Pattern:
    """``part`` split at its placeholders, and which value each stands for."""
    pieces = _PLACEHOLDER_SPLIT.split(part)  # text, placeholder, text, ...
    slots = tuple((index, _slot(pieces[index], ordinary)) for index in range(1, len(pieces), 2))
    return tuple(pieces), slots


def _fill(pattern: _Pattern, values: Sequence[str]) -> str:
    """A skeleton's part with ``values`` in place of its placeholders."""
    pieces, slots = pattern
    filled = list(pieces)
    for index, slot in slots:
        filled[index] = values[slot]
    return "".join(filled)


class _Skeletons:
    """One renderer's skeletons, by what shapes them, and the per-message proof above."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self._allowed = allowed
        self._cache: dict[tuple[object, ...], _Skeleton | None] = {}
        self._shapes: Counter[tuple[str, str]] = Counter()  # skeletons built per set

    def passes(
        self,
        templates: tuple[jinja2.Template, ...],
        key: tuple[str, str],
        context: Mapping[str, object],
        outputs: Sequence[str],
        subject: str,
        *,
        link: str,
        unsubscribe: str | None,
        transformed: frozenset[str] = frozenset(),
    ) -> bool:
        """True when the message rendered as ``outputs`` (``subject`` collapsed) passes the
        single-link rule by its skeleton's verdict; False means: check it in full.

        ``transformed`` names the variables the set passes through a filter or a method
        (``event_date.split("-")``): their values go into the skeleton as they are, and
        into its key, since a placeholder would come out changed and never match."""
        whole = _WHOLE_URL.fullmatch(link)
        if whole is None:
            return False
        shape: list[object] = [*key, unsubscribe is None, whole.group(1)]
        classes: dict[str, int] = {}
        values: list[str] = []
        for name, value in context.items():
            mark: object
            if type(value) is str:
                if name in transformed:
                    mark = (str, value)
                elif value == link:
                    mark = "l"
                elif value == unsubscribe:
                    mark = "u"
                elif not value:
                    mark = ""
                else:
                    mark = classes.get(value)
                    if mark is None:
                        mark = classes[value] = len(values)
                        values.append(value)
            elif value is None or type(value) in (int, bool, float):
                mark = (type(value), value)
            elif isinstance(value, list | tuple) and all(type(item) is str for item in value):
                mark = (type(value), tuple(value))
            else:
                return False  # a value whose text is not its own: no skeleton
            shape.append(name)
            shape.append(mark)
        cache_key = tuple(shape)
        try:
            skeleton = self._cache[cache_key]
        except KeyError:
            if len(self._cache) >= _MAX_SKELETONS or self._shapes[key] >= _MAX_SHAPES:
                return False
            self._shapes[key] += 1
            skeleton = self._cache[cache_key] = self._build(
                templates, key, context, shape, len(values), link=link, unsubscribe=unsubscribe
            )
        if skeleton is None or len(outputs) != (3 if skeleton.html is not None else 2):
            return False
        ordinary = len(values)
        values.append(link)
        values.append(unsubscribe or "")
        shown = "\n".join([values[slot] for slot in skeleton.used if slot < ordinary])
        if _NOT_INERT.search(shown) is not None:  # a line break joins no "//", "www." or "="
            return False
        for slot in skeleton.used:
            if slot >= ordinary and not _whole_link(values[slot]):
                return False
        if not all(
            _seams_ok(values[slot], before, after) for slot, before, after in skeleton.seams
        ):
            return False
        if subject != _fill(skeleton.subject, values) or outputs[1] != _fill(skeleton.text, values):
            return False
        if skeleton.html is None:
            return True
        if _HTML_SPECIAL.search(shown) is not None or "&" in link or "&" in values[-1]:
            values = [escape(value) for value in values]
        return outputs[2] == _fill(skeleton.html, values)

    def _build(
        self,
        templates: tuple[jinja2.Template, ...],
        key: tuple[str, str],
        context: Mapping[str, object],
        shape: list[object],
        ordinary: int,
        *,
        link: str,
        unsubscribe: str | None,
    ) -> _Skeleton | None:
        """The skeleton for ``shape``, or None when it fails the rule or a condition."""
        filled: dict[str, object] = {}
        for index in range(4, len(shape), 2):
            name, mark = shape[index], shape[index + 1]
            assert isinstance(name, str)  # shape alternates names and marks
            if mark in ("l", "u"):
                filled[name] = f"zqx{mark}q"
            elif mark == "":
                filled[name] = ""
            elif isinstance(mark, int):
                filled[name] = f"zqx{mark}q"
            else:
                filled[name] = context[name]
        try:
            home = site_of(urlsplit(link).hostname or "")
            outputs = [template.render(filled) for template in templates]
        except Exception:  # whatever fails here, the real render or the full check says
            return None
        skeleton = RenderedMessage(
            template=key[0],
            locale=key[1],
            subject=" ".join(outputs[0].split()),
            text=outputs[1],
            html=outputs[2] if len(outputs) > 2 else None,
        )
        if _link_problems(
            skeleton,
            link=_LINK_PLACEHOLDER,
            home=home,
            allowed_sites=self._allowed,
            unsubscribe=None if unsubscribe is None else _UNSUBSCRIBE_PLACEHOLDER,
        ):
            return None
        seams: dict[int, tuple[str, str]] = {}
        views = [skeleton.subject, skeleton.text]
        if skeleton.html is not None:
            if not _markup_ok(skeleton.html):
                return None
            views.append(htmllib.unescape(skeleton.html))
        if not all(_placeholders_ok(view, ordinary, seams) for view in views):
            return None
        used = {
            _slot(match.group(), ordinary)
            for part in (*views, skeleton.html or "")
            for match in _PLACEHOLDER.finditer(part)
        }
        if any(slot >= ordinary + 2 for slot in used):
            return None  # text that only looks like a placeholder (a value kept as it is)
        return _Skeleton(
            subject=_pattern(skeleton.subject, ordinary),
            text=_pattern(skeleton.text, ordinary),
            html=None if skeleton.html is None else _pattern(skeleton.html, ordinary),
            used=tuple(sorted(used)),
            seams=tuple((slot, *around) for slot, around in seams.items() if any(around)),
        )


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
