"""sender as an HTTP service for any LMS: ``sender serve``, or an ASGI app to mount.

:func:`app` makes the app from settings; :mod:`sender.service.serve` runs it under uvicorn.
One router per concern (``links``, ``messages``, ``runs``, ``feedback``), each guarded by
an API key's scope; ``web`` is the one module that imports the web framework.
"""

from sender.service.application import app

__all__ = ["app"]
