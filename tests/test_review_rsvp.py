"""A trusted relay's own DMARC verdict is never outvoted by a header the sender wrote."""

from __future__ import annotations

from sender.intake import dmarc_passed

RELAY = "mx.relay.example"
FORGED = (
    f"Authentication-Results: {RELAY}; dmarc=pass header.from=example.org\r\n"
    "From: ada@example.org\r\n"
    "Subject: Accepted\r\n\r\nyes\r\n"
)


def test_a_forged_pass_right_below_the_relays_fail_does_not_count() -> None:
    """The relay's topmost dmarc=fail for a domain wins over a pass written below it."""
    relayed = (
        "Received: from attacker.example by mx.relay.example; Tue, 23 Feb 2027\r\n"
        f"Authentication-Results: {RELAY}; dmarc=fail header.from=example.org\r\n" + FORGED
    ).encode()
    assert dmarc_passed(relayed, trusted_authserv_ids=[RELAY]) == frozenset()


def test_several_headers_of_the_relay_still_count_together() -> None:
    """A relay writing one header per check (DKIM, then DMARC) is read in full."""
    data = (
        f"Authentication-Results: {RELAY}; dkim=pass header.d=example.org\r\n"
        f"Authentication-Results: {RELAY}; dmarc=pass header.from=example.org\r\n"
        "From: ada@example.org\r\n\r\nyes\r\n"
    ).encode()
    assert dmarc_passed(data, trusted_authserv_ids=[RELAY]) == {"example.org"}
