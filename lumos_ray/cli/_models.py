"""`lumos models ...`: build and locate the embedded models."""

from __future__ import annotations

from pathlib import Path

import click

from lumos_ray.cli._common import emit, json_option

__all__ = ["register"]


@click.group("models")
def models() -> None:
    """Embedded models (lumos-tiny) used by the demo, tests and benchmarks."""


@models.command("build-tiny")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@json_option
def build_tiny(directory: str | None, as_json: bool) -> None:
    """Build lumos-tiny offline into DIRECTORY (default: the shared cache)."""
    from lumos_ray.models import build_tiny_model, tiny_model_path

    path: Path = build_tiny_model(directory) if directory else tiny_model_path()
    emit({"name": "lumos-tiny", "path": str(path)}, as_json, f"lumos-tiny: {path}")


@models.command("path")
@json_option
def tiny_path(as_json: bool) -> None:
    """Print the cached lumos-tiny directory (building it if absent)."""
    from lumos_ray.models import tiny_model_path

    path = tiny_model_path()
    emit({"name": "lumos-tiny", "path": str(path)}, as_json, str(path))


def register(cli: click.Group) -> None:
    cli.add_command(models)
