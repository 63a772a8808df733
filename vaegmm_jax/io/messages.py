"""Exceptions as one line of text, for error messages that name a file and what is wrong
with it (the tables readers wrap third-party errors with it; the command line prints it)."""

from __future__ import annotations

__all__ = ["QUOTE_LIMIT", "one_line"]

#: how much of another library's message (pandas, pyarrow, the OS) an error of ours quotes
QUOTE_LIMIT = 300


def one_line(err: BaseException, limit: int | None = None) -> str:
    """``err``'s message on one line.

    Runs of whitespace (newlines included) become one space; a KeyError's message is given
    without the quotes its ``str`` adds; an exception without a message gives its type's name.
    With ``limit``, a longer text is cut to ``limit`` characters ending in ``...`` (for the
    messages of other libraries, which can be long).
    """
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]
    else:
        text = str(err)
    text = " ".join(text.split()) or type(err).__name__
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text
