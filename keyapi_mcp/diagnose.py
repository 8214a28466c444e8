"""Start-up failures explained by what is actually wrong: which source a bad setting came from, and
whether an unusable state location is a missing/unusable directory or a bad database file.

A message that names the wrong cure costs a user more than no message: "move the file aside" when there
is no file, or "check the environment" when the value sits in a `.env` file nobody remembers writing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path

DOTENV = ".env"


def setting_source(name: str, *, environ: Mapping[str, str] = os.environ, dotenv: str | Path = DOTENV) -> str:
    """Where variable `name` was read from: "the environment", the `.env` file's path, or "" when neither has it.

    The environment wins over `.env` (as pydantic-settings reads them); names match case-insensitively.
    """
    upper = name.upper()
    if any(key.upper() == upper for key in environ):
        return "the environment"
    path = Path(dotenv)
    if path.is_file():
        from dotenv import dotenv_values  # pydantic-settings' own .env reader

        if any(key.upper() == upper for key in dotenv_values(path)):
            return str(path.resolve())
    return ""


def state_open_failure(db_path: str | Path, exc: BaseException) -> str:
    """The message for a state database that cannot be opened, naming the directory or the file as the cause."""
    path = Path(db_path)
    directory = path.parent
    reason = getattr(exc, "strerror", None) or str(exc)
    if getattr(exc, "errno", None) == errno.ENOSPC or "disk is full" in str(exc).lower():
        return (
            f"Cannot open the state database {path}: the disk is full. Free some space (the ledger of credits "
            "spent lives there) or point KEYAPI_STATE_DIR at a directory on another disk."
        )
    if directory.exists() and not directory.is_dir():
        return (
            f"Cannot use the state directory {directory}: it exists but is not a directory. Point "
            "KEYAPI_STATE_DIR at a directory (it is created if missing)."
        )
    if not directory.is_dir():
        return (
            f"Cannot create the state directory {directory}: {reason}. Point KEYAPI_STATE_DIR at a writable "
            "directory (it is created if missing)."
        )
    if not path.exists() or not os.access(directory, os.W_OK | os.X_OK):
        return (
            f"Cannot create the state database in {directory}: {reason}. Point KEYAPI_STATE_DIR at a writable "
            "directory."
        )
    return (
        f"Cannot open the state database {path}: {reason}. Move the file aside (the ledger of credits spent "
        "lives there) or point KEYAPI_STATE_DIR at a writable directory."
    )
