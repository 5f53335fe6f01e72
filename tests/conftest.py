"""For every test: nothing is written into the checkout.

The state dir (and so every path derived from it, the model repository included) is a temporary directory for
the whole session; tests that need their own set it explicitly, as the integration fixtures do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

STATE_DIR_VARIABLE = "DIFFSENTRY_STATE_DIR"


@pytest.fixture(autouse=True, scope="session")
def state_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.environ.get(STATE_DIR_VARIABLE)
    os.environ[STATE_DIR_VARIABLE] = str(tmp_path_factory.mktemp("default-state-dir"))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(STATE_DIR_VARIABLE, None)
        else:
            os.environ[STATE_DIR_VARIABLE] = previous
