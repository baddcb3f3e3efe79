"""Mail going out, as bytes: signed links and return paths, templates with the single-link rule,
calendar objects, MIME, DKIM, and the site (registrable domain) of a URL."""

__all__: list[str] = []  # import from the modules; this package only groups them
