"""The ``netlet`` command line; ``main`` is the console-script entry point.

Importing this package sets nothing up: logging is configured by the command
when it runs (from ``-v``), never at import. How to add a command is written
in ``netlet.cli._main``.
"""

from netlet.cli._main import main

__all__ = ["main"]
