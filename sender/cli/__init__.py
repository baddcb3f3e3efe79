"""The ``sender`` command line: one module per concept, each registering its commands.

``sender.cli.main`` is the console entry point (``[project.scripts]``).
"""

import sender.cli.bounces
import sender.cli.calendar
import sender.cli.checks
import sender.cli.messages
import sender.cli.queue
import sender.cli.runs
import sender.cli.serve
import sender.cli.webhooks  # noqa: F401 - importing a command module registers its commands
from sender.cli.app import main

__all__ = ["main"]
