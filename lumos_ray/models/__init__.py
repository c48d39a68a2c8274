"""Embedded models, built offline and deterministically.

``lumos-tiny`` (random weights) is the default model of tests and benchmarks;
``lumos-tiny-tools`` is taught to call the built-in calculator and date tools, and is
the model of the demo. Any local Hugging Face model directory (or, on a GPU, any
vLLM-supported model) replaces them by config.
"""

from lumos_ray.models._tiny import TINY_MODEL_NAME, build_tiny_model, tiny_model_path
from lumos_ray.models._tools_model import TOOLS_MODEL_NAME, tools_model_build, tools_model_path

__all__ = [
    "TINY_MODEL_NAME",
    "TOOLS_MODEL_NAME",
    "build_tiny_model",
    "tiny_model_path",
    "tools_model_build",
    "tools_model_path",
]
