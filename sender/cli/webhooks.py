"""``sender webhooks list | test | replay``: the LMS's endpoints, as configured and as delivered."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import click

from sender.cli.app import (
    EXIT_CONFIG,
    EXIT_FAILED,
    Context,
    errors_as_lines,
    fail,
    main,
    out,
    pass_context,
    print_home,
    with_store,
)
from sender.config import CliConfig, WebhookEndpoint, parse_duration
from sender.store import Store
from sender.webhooks import post_test_events

__all__ = ["webhooks"]


def shown(url: str) -> str:
    """The URL without a password or query, either of which may hold a credential."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def chosen(config: CliConfig, endpoint: int | None) -> list[WebhookEndpoint]:
    if not config.webhooks:
        fail(NONE, EXIT_CONFIG)
    if endpoint is None:
        return list(config.webhooks)
    if not 1 <= endpoint <= len(config.webhooks):
        fail(f"--endpoint must be 1 to {len(config.webhooks)}", EXIT_CONFIG)
    return [config.webhooks[endpoint - 1]]


NONE = (
    "no webhooks configured: set SENDER_WEBHOOK_URL and SENDER_WEBHOOK_SECRET, "
    "or webhooks in sender.toml"
)

endpoint_option = click.option(
    "--endpoint", type=int, help="Only the Nth [[webhooks]] entry (1 is the first)."
)


@main.group()
def webhooks() -> None:
    """The LMS's webhook endpoints: what they get, and sending it again."""


@webhooks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable.")
@pass_context
def webhooks_list(obj: Context, as_json: bool) -> None:
    """Each configured endpoint, its events, and its deliveries: pending, delivered, failed."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
    states = {s.url: s for s in obj.run(with_store(config, lambda store: store.hook_endpoints()))}
    rows: list[dict[str, Any]] = []
    for endpoint in config.webhooks:
        state = states.get(endpoint.url)
        rows.append(
            {
                "endpoint": endpoint.name,
                "url": shown(endpoint.url),
                "events": sorted(endpoint.events) or ["all"],
                "secrets": len(endpoint.secrets),
                "pending": state.pending if state else 0,
                "delivered": state.delivered if state else 0,
                "failed": state.failed if state else 0,
                "disabled": state.disabled_reason if state else None,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        out.print(NONE)
    for row in rows:
        disabled = f", DISABLED ({row['disabled']})" if row["disabled"] else ""
        out.print(
            f"{row['endpoint']} {row['url']}: {', '.join(row['events'])}; "
            f"{row['pending']} pending, {row['delivered']} delivered, {row['failed']} failed"
            f"{disabled}"
        )
    print_home(config)


@webhooks.command("test")
@endpoint_option
@pass_context
def webhooks_test(obj: Context, endpoint: int | None) -> None:
    """Post a signed ``webhook.test`` event to each endpoint now and show its answer."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
    targets = chosen(config, endpoint)

    answers = obj.run(post_test_events(targets))
    failed = False
    for target, (status, error) in zip(targets, answers, strict=True):
        good = status is not None and 200 <= status < 300
        failed |= not good
        out.print(
            f"{target.name} {shown(target.url)}: {error or status}{'' if good else ' (failed)'}"
        )
    if failed:
        raise SystemExit(EXIT_FAILED)


@webhooks.command("replay")
@click.option("--since", "since_text", default="24h", show_default=True, help="e.g. 1h, 24h, 3d.")
@endpoint_option
@pass_context
def webhooks_replay(obj: Context, since_text: str, endpoint: int | None) -> None:
    """Send an endpoint's events since --since again (delivered or given up alike), and
    enable it if a 410 disabled it; a running worker or `sender serve` posts them."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
        since = time.time() - parse_duration(since_text, setting="--since").total_seconds()
    for target in chosen(config, endpoint):

        async def replay(store: Store, url: str = target.url) -> int:
            return await store.replay_hook_events(url, since=since, now=time.time())

        count = obj.run(with_store(config, replay))
        out.print(f"{target.name} {shown(target.url)}: {count} deliveries due again")
    print_home(config)
