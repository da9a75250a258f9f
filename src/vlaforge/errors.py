"""The one mapping from a library error to what a command line shows: bad input is one ``error: ...`` line on
stderr and exit status 2; anything else is a bug and keeps its traceback.

Bad input (a path, a name, a flag, a file's contents) is what :data:`INPUT_ERRORS` holds: ``ValueError`` (and
the library's own subclasses: ``CheckpointError``, ``DatasetFormatError``, ``OverrideError``, ...),
``KeyError``, the file errors, and any :class:`InputError` (``VideoError``). The library raises these with
messages that say what was expected and what came. ``VLAFORGE_TRACEBACK=1`` shows the traceback for them too.

Both command lines use it: every ``vlaforge`` command (``vlaforge.cli``) and ``vlaforge train`` /
``python -m vlaforge.train`` (``vlaforge.training.commandline``, which returns the status).
"""

from __future__ import annotations

import os
import sys

#: the exit status of bad input
INPUT_ERROR_STATUS = 2


class InputError(Exception):
    """A library error that means the input was wrong but is no ``ValueError`` (a dataset's unreadable video:
    ``vlaforge.data.video.VideoError``, a ``RuntimeError``); :data:`INPUT_ERRORS` holds it."""


#: exceptions that mean the input was wrong: reported as one line, exit status 2
INPUT_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                PermissionError, InputError)


def error_line(e: BaseException) -> str:
    """The one line printed for an input error (a KeyError's message without the quotes repr adds)."""
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in msg:
        msg = f"{e.filename}: {msg}"
    return "error: " + " ".join((msg or type(e).__name__).split())


def report(e: BaseException) -> int:
    """Print ``e``'s error line to stderr and return :data:`INPUT_ERROR_STATUS`; call it in an
    ``except INPUT_ERRORS`` block. With ``VLAFORGE_TRACEBACK`` set, ``e`` is raised again instead."""
    if os.environ.get("VLAFORGE_TRACEBACK"):
        raise e
    print(error_line(e), file=sys.stderr)
    return INPUT_ERROR_STATUS
