"""Files that hold secrets (tokens, keys, webhook secrets) are readable and writable by their owner only (0600)."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_MODE = 0o600


def make_private(path: Path) -> None:
    """Creates the file empty if it is missing, and makes it 0600 either way (files an earlier version created)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)
    finally:
        os.close(fd)


def write_private_text(path: Path, text: str) -> None:
    """Writes the file, 0600 from its first byte on (never world-readable, not even for a moment)."""
    make_private(path)
    with path.open("w") as handle:
        handle.write(text)
