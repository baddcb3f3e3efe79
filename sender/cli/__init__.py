"""The ``sender`` command line: one module per concept, each registering its commands.

``sender.cli.main`` is the console entry point (``[project.scripts]``). ``COMMANDS`` names
the module of each command, imported when that command runs: ``sender run`` loads what a
run needs, not every other command's libraries.
"""

from sender.cli.app import main

# Each top-level command and the module that registers it (tests/test_cli_commands.py
# checks both ways); a new command module adds its commands here.
COMMANDS = {
    "bounces": "sender.cli.bounces",
    "code": "sender.cli.messages",
    "dkim": "sender.cli.doctor",
    "doctor": "sender.cli.doctor",
    "enqueue": "sender.cli.queue",
    "inbound": "sender.cli.bounces",
    "invite": "sender.cli.calendar",
    "link": "sender.cli.messages",
    "preview": "sender.cli.serve",
    "render": "sender.cli.messages",
    "resume": "sender.cli.runs",
    "retry": "sender.cli.runs",
    "rsvp": "sender.cli.calendar",
    "run": "sender.cli.runs",
    "send": "sender.cli.messages",
    "serve": "sender.cli.serve",
    "status": "sender.cli.runs",
    "suppress": "sender.cli.bounces",
    "templates": "sender.cli.messages",
    "validate": "sender.cli.checks",
    "webhooks": "sender.cli.webhooks",
    "worker": "sender.cli.queue",
}
main.modules.update(COMMANDS)

__all__ = ["COMMANDS", "main"]
