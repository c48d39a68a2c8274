"""The Serve application builder that a RayService (KubeRay) or ``serve deploy`` names.

A Ray Serve config file starts an application by import path and hands it ``args``;
``serve build`` cannot be used for lumos's gateway because the app is built from a
:class:`~lumos_ray.serve.ServeConfig` (Serve's builder contract: one parameter, the
args dict). This function is that contract over the project's one real builder,
:func:`lumos_ray.serve.build_application`, so a cluster runs the same graph (gateway,
vLLM deployments, embedder) as ``lumos serve up``. ``cluster/build_serve_config.py``
writes the config that names it.
"""

from __future__ import annotations

from typing import Any

from lumos_ray.config import format_validation_error
from lumos_ray.errors import ConfigError

__all__ = ["IMPORT_PATH", "app_builder"]

#: What a Serve config's ``import_path`` says to start the lumos gateway application.
IMPORT_PATH = "lumos_ray.rayservice:app_builder"


def app_builder(args: dict[str, Any]) -> Any:
    """Serve's application builder: ``args`` is a ServeConfig as a dict (the contents of
    a ``configs/serve/*.yaml`` file); returns the bound Serve application."""
    from pydantic import ValidationError

    from lumos_ray.serve import ServeConfig, build_application

    try:
        config = ServeConfig.model_validate(args or {})
    except ValidationError as exc:
        raise ConfigError(
            f"The Serve config's args are not a valid lumos serve config: "
            f"{format_validation_error(exc)}",
            fix="Regenerate the config with `python cluster/build_serve_config.py`, or fix "
            "the field named above (the same schema as configs/serve/*.yaml).",
        ) from None
    return build_application(config)
