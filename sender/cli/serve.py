"""``sender serve``: the HTTP API for any LMS, under uvicorn; ``sender preview``: the admin
pages on loopback."""

from __future__ import annotations

import dataclasses
import secrets
import webbrowser
from pathlib import Path
from urllib.parse import urlsplit

import click

from sender.addresses import is_loopback_host
from sender.cli.app import (
    EXIT_CONFIG,
    Context,
    err,
    errors_as_lines,
    fail,
    maildir_option,
    main,
    pass_context,
    smtp_option,
)
from sender.config import ApiKey, CliConfig, Scope
from sender.errors import InputError

__all__ = ["preview", "serve"]


@main.command()
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT.")
@click.option(
    "--work/--no-work",
    default=True,
    show_default=True,
    help="Also send every active run, as `sender worker` does (--no-work: workers send).",
)
@smtp_option
@maildir_option
@pass_context
def serve(
    obj: Context, listen: str, work: bool, smtp_url: str | None, maildir: Path | None
) -> None:
    """Serve the HTTP API (Get Links, sends, runs, suppressions) until Ctrl-C.

    Every request but GET /openapi.json needs `Authorization: Bearer KEY` with a key
    from SENDER_API_KEYS or api_keys in sender.toml: `KEY` (every scope) or
    `KEY:links+send+runs+admin`.
    """
    try:  # the `serve` extra; the rest of the command line works without it
        from sender.service.serve import parse_listen
    except ImportError as exc:
        fail(
            f"sender serve needs the serve extra: pip install 'sender[serve]' ({exc})", EXIT_CONFIG
        )
    with errors_as_lines(obj.debug):
        config = obj.config(smtp_url=smtp_url, maildir=str(maildir) if maildir else None)
        host, port = parse_listen(listen)
    if not config.api_keys:
        fail(
            "sender serve needs an API key: set SENDER_API_KEYS (or api_keys in sender.toml)",
            EXIT_CONFIG,
        )
    obj.run(_serve(config, host, port, work=work))


async def _serve(config: CliConfig, host: str, port: int, *, work: bool) -> None:
    from sender.service import app
    from sender.service.serve import Listener

    async with Listener(app(config, work=work), host=host, port=port) as listening:
        sends = "sending active runs" if work else "not sending runs (--no-work)"
        err.print(
            f"serving the HTTP API on {listening.url} ({len(config.api_keys)} API key(s), "
            f"{sends}); Ctrl-C stops",
            markup=False,
            highlight=False,
        )
        links = config.sender.links
        path = urlsplit(links.base_url).path or "/"
        target = links.lms_login_url or "nowhere: set lms_login_url for its POST"
        err.print(
            f"the landing page for {links.base_url} answers at {listening.url}{path}; "
            f"it sends sign-ins to {target}",
            markup=False,
            highlight=False,
        )
        await listening.wait()


@main.command()
@click.option(
    "--listen",
    default="127.0.0.1:0",
    show_default=True,
    help="HOST:PORT on loopback (port 0: any free port).",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the login page in a browser.")
@pass_context
def preview(obj: Context, listen: str, open_browser: bool) -> None:
    """Serve the admin pages on loopback, to preview every template in every locale.

    Prints the address and a key to log in with: made for this process alone, printed
    once, with the admin scope only, gone when the command stops. Keys from
    SENDER_API_KEYS with the admin scope work too. Nothing is sent: runs are left to
    `sender worker` or `sender serve`. Ctrl-C stops.
    """
    try:  # the `serve` extra; the rest of the command line works without it
        from sender.service.serve import parse_listen
    except ImportError as exc:
        fail(
            f"sender preview needs the serve extra: pip install 'sender[serve]' ({exc})",
            EXIT_CONFIG,
        )
    with errors_as_lines(obj.debug):
        config = obj.config()
        host, port = parse_listen(listen)
        if not is_loopback_host(host):
            raise InputError(
                f"sender preview listens on loopback only, not {host}; use sender serve",
                field="listen",
            )
        key = ApiKey(secrets.token_urlsafe(24), frozenset({Scope.ADMIN}), name="preview key")
        config = dataclasses.replace(config, api_keys=(*config.api_keys, key))
    obj.run(_preview(config, host, port, key=key.key, open_browser=open_browser))


async def _preview(
    config: CliConfig, host: str, port: int, *, key: str, open_browser: bool
) -> None:
    from sender.service import app
    from sender.service.serve import Listener

    async with Listener(app(config, work=False), host=host, port=port) as listening:
        url = f"{listening.url}/admin/preview"
        click.echo(url)
        err.print(
            f"log in with this key (valid until this command stops): {key}\nCtrl-C stops",
            markup=False,
            highlight=False,
        )
        if open_browser:
            webbrowser.open(f"{listening.url}/admin/login")
        await listening.wait()
