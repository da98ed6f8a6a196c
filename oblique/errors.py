"""The one base class of every user-facing error.

Every error a user can cause — an unknown name, a bad setting, an unreadable record, a data folder that is
not there, a study folder in use — is an :class:`ObliqueError`. Its message is one line that says what is
wrong and what to do, and names the *setting* (``lr``), never a command-line flag: the library does not
know how it was called. The command line (:mod:`oblique.cli`) catches ``ObliqueError``, renders the setting
names it carries as its flags (``lr`` → ``--lr``) with :meth:`ObliqueError.render`, prints
``oblique: error: <message>`` and exits with status 2.

Each subclass keeps the built-in base it had before (``ValueError`` for a bad value, ``RuntimeError`` for
data that cannot be read), so ``except ValueError`` in a caller's code keeps working.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["ObliqueError", "ObliqueWarning", "UsageError"]


class ObliqueError(Exception):
    """A user-facing error: one line, no traceback at the command line.

    Args:
        message: what is wrong and what to do. Setting names in it are written as the library knows
            them (``batch_size``).
        settings: the setting names the message mentions, in order; :meth:`render` replaces the first
            whole-word occurrence of each (so the command line can say ``--batch-size``).
    """

    def __init__(self, message: str = "", *, settings: tuple[str, ...] = ()):
        super().__init__(message)
        self.settings = tuple(settings)

    def render(self, name: Callable[[str], str]) -> str:
        """The message with every setting named by ``name(setting)`` (the CLI passes its flag names).

        >>> ObliqueError("lr must be a number > 0; got -1", settings=("lr",)).render(lambda s: "--" + s)
        '--lr must be a number > 0; got -1'
        """
        text = str(self)
        for setting in self.settings:
            pattern = rf"(?<![\w.-]){re.escape(setting)}(?![\w-])"
            new = name(setting).replace("\\", "\\\\")  # a replacement template, not a function
            text = re.sub(pattern, new, text, count=1)
        return text


class UsageError(ObliqueError):
    """A command-line usage error (an unknown flag, a flag value argparse cannot read); one line."""


class ObliqueWarning(UserWarning):
    """Something the user should know that does not stop the work (a corrupt line of a record, skipped; a
    cache folder that cannot be written): one line. The command line prints it as
    ``oblique: warning: <message>``."""
