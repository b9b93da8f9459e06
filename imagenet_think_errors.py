"""The toolkit's expected failures: a wrong input or a refusal, with a message a person can act on.

Library code raises these where the user can fix the cause (a misspelled path, a run
from another manifest, a config typo). Their message names the input and the fix;
the ``imagenet-think`` entry point prints it in a line or two without a traceback
and exits with ``exit_code``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ImageNetThinkError(Exception):
    """An expected failure; ``str(error)`` names the input and the fix."""

    exit_code = 1


class InputError(ImageNetThinkError, ValueError):
    """An input is wrong or does not fit the others: a file, a folder, a config value."""


class MissingInputError(InputError, FileNotFoundError):
    """An input named by the user does not exist (or holds nothing the stage can use)."""


class UsageError(InputError):
    """Command-line arguments that contradict each other or are out of range (exit status 2)."""

    exit_code = 2


class RefusedError(ImageNetThinkError, RuntimeError):
    """The stage refuses to go on because doing so would lose or mix up data (e.g. overwrite a
    folder it does not own, resume a run with another config)."""
