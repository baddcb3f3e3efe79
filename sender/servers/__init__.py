"""The SMTP servers sender runs: the one aiosmtpd wrapper (``smtpd``), the local capture server
(``capture``) and the inbound listener (``inbound``)."""

__all__: list[str] = []  # import from the modules; this package only groups them
