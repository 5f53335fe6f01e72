"""Where this source tree lies, so that Triton's python backend imports the very same code as its caller."""

from __future__ import annotations

from pathlib import Path

import triton_models

# The directory that holds the top-level packages (pipeline/, triton_models/, ...): put on PYTHONPATH of the
# Triton python backend stubs so that models import `triton_models` from this tree, not from an installed copy.
SOURCE_ROOT = Path(triton_models.__file__).resolve().parent.parent

# The committed model repository template: models every deployment serves (the health model `diffsentry_ping`).
TEMPLATE_REPOSITORY = Path(triton_models.__file__).resolve().parent / "repository"

PING_MODEL = "diffsentry_ping"
