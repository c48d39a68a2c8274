"""Embedded models: ``lumos-tiny``, built offline and deterministically.

Used as the default model of the demo, tests and benchmarks; any local Hugging Face
model directory (or, on a GPU, any vLLM-supported model) replaces it by config.
"""

from lumos_ray.models._tiny import TINY_MODEL_NAME, build_tiny_model, tiny_model_path

__all__ = ["TINY_MODEL_NAME", "build_tiny_model", "tiny_model_path"]
