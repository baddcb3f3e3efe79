"""Pacing: the scheduler with its global and per-domain rate limits, backoff and retry policy
(``schedule``), used by single sends and bulk runs alike."""

__all__: list[str] = []  # import from the modules; this package only groups them
