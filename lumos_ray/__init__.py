"""lumos_ray: a distributed runtime for AI agents on Ray."""

from __future__ import annotations

from lumos_ray.config import LumosSettings
from lumos_ray.errors import LumosError

__version__ = "0.1.0"

__all__ = ["LumosError", "LumosSettings", "__version__"]
