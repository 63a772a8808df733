"""Which errors are the user's to fix (one line, exit code 2) and which are the program's
(a traceback, exit code 1).

A problem with what the user gave (arguments, a configuration, a data file, its columns and
values, a damaged model folder) is reported in one line. The command line finds those
problems itself, or calls an input-reading or input-validating function inside
:func:`input_errors`, which turns the ValueError/KeyError it raises into an
:class:`InputError`. Any other exception, a ValueError from deep inside training included,
is a bug: it is never disguised as bad input.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from vaegmm_jax.engine.validation import NotFittedError
from vaegmm_jax.io.checkpoint import CheckpointError
from vaegmm_jax.io.messages import one_line

__all__ = ["InputError", "input_errors", "USER_ERRORS"]


class InputError(Exception):
    """Bad command-line usage or input: reported as one line, exit code 2."""


#: exceptions reported as one line with exit code 2: the command line's own InputError; a
#: damaged or incomplete model folder (CheckpointError, NotFittedError); paths that do not
#: exist or cannot be used; and a numerical failure the library explains with advice
#: (FloatingPointError: training diverged, or the mixture is not positive definite, on this
#: data with these settings).
USER_ERRORS: tuple[type[BaseException], ...] = (
    InputError,
    CheckpointError,
    NotFittedError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    FloatingPointError,
)


@contextmanager
def input_errors(context: str = "", also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Runs a call that reads or validates user input: the ValueError/KeyError (and ``also``)
    it raises is a problem with that input and becomes an InputError (``context`` + its
    one-line message).

    Wrap only such calls (reading a data file, parsing a column list, building a detector
    from the configuration's settings): whatever else raises inside the block is reported as
    bad input too.
    """
    try:
        yield
    except CheckpointError:  # already names the damaged file
        raise
    except (ValueError, KeyError, *also) as err:
        raise InputError(f"{context}{one_line(err)}") from err
