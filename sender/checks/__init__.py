"""Checks before sending: DNS look-ups (``resolve``), list validation (``validate``) and the domain
doctor (``doctor``)."""

__all__: list[str] = []  # import from the modules; this package only groups them
