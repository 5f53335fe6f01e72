"""The README's settings table names every Settings field with its environment variable and default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _fields(model: type[BaseModel], path: str = "", env: str = "DIFFSENTRY_") -> Iterator[tuple[str, str, Any]]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _fields(annotation, f"{path}{name}.", f"{env}{name.upper()}__")
        else:
            default = field.default_factory() if field.default_factory else field.default
            yield f"{path}{name}", f"{env}{name.upper()}", default


def test_every_settings_field_has_a_row_with_its_environment_variable() -> None:
    rows = {line.split("|")[1].strip(): line for line in README.read_text().splitlines() if line.startswith("| `")}
    missing = []
    for path, env, default in _fields(Settings):
        row = rows.get(f"`{path}`")
        if row is None or f"`{env}`" not in row:
            missing.append(f"| `{path}` | `{env}` | `{default}` | |")
        elif default not in (None, "") and f"`{default}`" not in row:
            missing.append(f"{path}: default `{default}` not in its row")
    assert not missing, "README settings table lacks:\n" + "\n".join(missing)
