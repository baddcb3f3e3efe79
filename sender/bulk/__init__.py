"""Bulk runs: the durable runner (``runner``) and the worker processes that compose and send for it
(``workers``)."""

__all__: list[str] = []  # import from the modules; this package only groups them
