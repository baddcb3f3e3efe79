"""Bulk runs: ``runner`` (the durable run), ``dispatcher`` (its send loop), ``ingest`` (rows into
the outbox), ``workers`` (processes that compose and send), ``status`` (what a run shows) and
``settings`` (``RunSettings``)."""

__all__: list[str] = []  # import from the modules; this package only groups them
