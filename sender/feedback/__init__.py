"""Mail coming back: reading mailboxes (``intake``), bounces and their reasons (``bounces``), and
the suppression list with the bounce budget (``suppression``)."""

__all__: list[str] = []  # import from the modules; this package only groups them
