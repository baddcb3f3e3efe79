"""Mail kept on disk (capture server, inbound listener) is private: 0700 folders, 0600 files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import aiosmtplib

from sender.servers.inbound import InboundMail, InboundServer


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def failing(_mail: InboundMail) -> None:
    raise RuntimeError("classifier crashed")


async def test_inbound_keeps_unprocessed_mail_private(tmp_path: Path) -> None:
    """A message the handler failed on is kept as a 0600 file in 0700 Maildir folders."""
    os.umask(0o022)
    keep = tmp_path / "inbound"
    async with (
        InboundServer(
            bounce_domain="bounce.example.com",
            reply_addresses=(),
            on_mail=failing,
            keep_dir=keep,
        ) as server,
        aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=5) as client,
    ):
        await client.sendmail("", ["bounces+x@bounce.example.com"], b"Subject: x\r\n\r\nbody\r\n")
    box = keep / "unprocessed"
    for folder in (box, box / "new", box / "cur", box / "tmp"):
        assert mode(folder) == 0o700, folder
    [kept] = list((box / "new").iterdir())
    assert mode(kept) == 0o600
