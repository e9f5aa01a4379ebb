"""One line for a user's mistake: what every entry point prints for a ValueError or OSError.

Bad input (a data spec, a file, a config value) is the user's to fix, so it ends a command
with one line naming the input and the cause, not a traceback; `JAXWHISPER_TRACEBACK=1`
re-raises instead, for debugging. Imports nothing heavy (`jaxwhisper --help` stays fast).
"""

from __future__ import annotations

import os

USER_ERRORS = (ValueError, OSError)


def show_traceback() -> bool:
    """Whether `JAXWHISPER_TRACEBACK` asks for the traceback instead of one line."""
    return os.environ.get("JAXWHISPER_TRACEBACK", "") not in ("", "0")


def one_line(e: BaseException) -> str:
    """`e` as one line that names its input: `PATH: cause` for an OSError with a file name,
    else the message's first line (the type's name when it has none)."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else f"{e.filename}"
        return f"{where}: {e.strerror}"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
