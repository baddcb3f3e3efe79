"""``python -m sender`` is the ``sender`` command."""

from sender.cli import main

main()
