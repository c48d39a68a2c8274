"""One vLLM engine with its OpenAI serving classes, through vLLM's public API only.

Why our own host rather than ``ray.serve.llm``'s ``LLMServer``: its LoRA loader seam
(``model_downloader``) is typed by, and must return, private Ray classes, and it only
downloads adapters from object-store URIs; its node-initialisation seam is private too.
Here the engine is built the way ``vllm serve`` builds it
(``build_async_engine_client_from_engine_args`` + ``init_app_state``), so the model
replica runs exactly vLLM's request handling (chat template, tool parsers, structured
output, streaming) with no layer of Ray's in between, and LoRA adapters are loaded by
path with ``OpenAIServingModels.load_lora_adapter``.

Nothing here knows about Ray Serve: the deployment in ``_llm_server`` wraps this class
(and a single-process server could embed it directly, which issue 18 may want).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from lumos_ray.errors import AdapterError, ConfigError
from lumos_ray.serve._config import ServedModelConfig
from lumos_ray.serve._wire import JsonReply, error_body

__all__ = [
    "VLLMHost",
    "engine_args_namespace",
    "engine_threads",
    "resolve_model_source",
    "vllm_engine_kwargs",
]

log = logging.getLogger(__name__)

#: Keys the config may not set: the host owns them.
_RESERVED = {"model", "served_model_name", "model_tag"}


def resolve_model_source(source: str) -> str:
    """'lumos-tiny' -> the cached local build; anything else is passed through."""
    from lumos_ray.models import TINY_MODEL_NAME, tiny_model_path

    if source == TINY_MODEL_NAME:
        return str(tiny_model_path())
    p = Path(source).expanduser()
    return str(p.resolve()) if p.exists() else source


def vllm_engine_kwargs(model: ServedModelConfig) -> dict[str, Any]:
    """The model's engine arguments plus what its LoRA settings imply."""
    kwargs = dict(model.engine_kwargs)
    if model.lora.enabled:
        kwargs.setdefault("enable_lora", True)
        kwargs.setdefault("max_lora_rank", model.lora.max_lora_rank)
        kwargs.setdefault("max_loras", model.lora.max_adapters_per_replica)
    return kwargs


def engine_threads(model: ServedModelConfig) -> int | None:
    """OMP_NUM_THREADS for ``model``'s engine process: ``engine_threads``, else every
    CPU this process may run on, or None when the model's ``env`` sets it itself.

    Why: Ray starts each worker with OMP_NUM_THREADS=1 (its default for a task of at
    most one CPU), and vLLM's engine process inherits it from the replica, so its
    forward pass ran on one thread where ``vllm serve`` uses every core. Below
    saturation that made each decoding step ~1.65x slower (inter-token latency 9.8 ms
    against 5.9 ms at 20 requests/s on 2 cores; benchmarks/RESULTS.md, issue 18)."""
    if model.engine_threads is not None:
        return model.engine_threads
    if "OMP_NUM_THREADS" in model.env:
        return None
    return len(os.sched_getaffinity(0))


def engine_args_namespace(source: str, served_name: str, kwargs: dict[str, Any]) -> Any:
    """``vllm serve``'s parsed arguments for ``source`` with ``kwargs`` applied.

    Starting from vLLM's own parser keeps every default identical to ``vllm serve``
    (the baseline issue 18 measures against). Keys are the argument names with
    underscores (``max_model_len``, ``tool_call_parser``, ...); an unknown key is a
    :class:`ConfigError` naming it, not a silently ignored setting.
    """
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args([])
    bad = sorted(k for k in kwargs if k in _RESERVED or not hasattr(args, k))
    if bad:
        raise ConfigError(
            f"Unknown or reserved vLLM engine argument(s) {bad} in engine_kwargs.",
            fix="Use vLLM's `vllm serve` argument names with underscores (e.g. "
            "max_model_len, tool_call_parser); `model` and `served_model_name` come from "
            "the model's `source` and `name`.",
        )
    for key, value in kwargs.items():
        setattr(args, key, value)
    args.model = source
    args.served_model_name = [served_name]
    try:
        validate_parsed_serve_args(args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid vLLM engine arguments: {exc}") from None
    return args


class VLLMHost:
    """A started vLLM ``AsyncLLM`` plus vLLM's OpenAI chat/completion handlers."""

    def __init__(
        self,
        served_name: str,
        source: str,
        engine_kwargs: dict[str, Any],
        threads: int | None = None,
    ) -> None:
        """``threads``: OMP_NUM_THREADS of the engine process on a CPU engine (see
        :func:`engine_threads`); None leaves the environment as it is."""
        self.served_name = served_name
        self.threads = threads
        self._args = engine_args_namespace(source, served_name, dict(engine_kwargs))
        self._stack = AsyncExitStack()
        self.engine: Any = None
        self._chat: Any = None
        self._completion: Any = None
        self._models: Any = None

    async def start(self) -> None:
        """Build the engine (20-80 s on CPU) and vLLM's serving state."""
        from starlette.datastructures import State
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.api_server.entry import (
            build_async_engine_client_from_engine_args,
        )

        engine_args = AsyncEngineArgs.from_cli_args(self._args)
        if self.threads is not None:
            from vllm.platforms import current_platform

            if current_platform.is_cpu():
                # Read by the engine process vLLM spawns next (it inherits this
                # environment); the replica's own torch has sized its pool already.
                os.environ["OMP_NUM_THREADS"] = str(self.threads)
        self.engine = await self._stack.enter_async_context(
            build_async_engine_client_from_engine_args(engine_args)
        )
        state = State()
        tasks = await self.engine.get_supported_tasks()
        await init_app_state(self.engine, state, self._args, supported_tasks=tasks)
        self._chat = getattr(state, "openai_serving_chat", None)
        self._completion = getattr(state, "openai_serving_completion", None)
        self._models = state.openai_serving_models
        # Read vLLM's VLLM_* settings once from now on, as vLLM's own engine processes
        # do once initialised (its public helper for this); its API server does not.
        # Why: its metrics read VLLM_COMPUTE_NANS_IN_LOGITS (two os.getenv calls) per
        # generated token per request, ~5% of the gateway loop's CPU at 64 clients
        # (py-spy; benchmarks/RESULTS.md, issue 18). Nothing here changes a VLLM_*
        # variable after the engine started.
        from vllm import envs

        envs.enable_envs_cache()

    async def shutdown(self) -> None:
        await self._stack.aclose()

    async def check_health(self) -> None:
        """Raises when the engine core died (Serve then replaces the replica)."""
        await self.engine.check_health()

    # -- LoRA -------------------------------------------------------------------------
    def adapter_loaded(self, name: str) -> bool:
        return name in self._models.lora_requests

    async def load_adapter(self, name: str, path: str) -> None:
        """Load a peft adapter directory under ``name`` (no-op when loaded)."""
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        if self.adapter_loaded(name):
            return
        result = await self._models.load_lora_adapter(
            LoadLoRAAdapterRequest(lora_name=name, lora_path=path),
            base_model_name=self.served_name,
        )
        if isinstance(result, ErrorResponse):
            raise AdapterError(
                f"vLLM could not load the adapter {name!r} from {path}: {result.error.message}",
                fix="Check that the adapter was trained for this base model and that "
                "its rank is at most lora.max_lora_rank in the serve config.",
            )

    async def unload_adapter(self, name: str) -> None:
        """Forget ``name``: new requests for it reload it; running ones finish."""
        from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

        if self.adapter_loaded(name):
            await self._models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))

    # -- requests ---------------------------------------------------------------------
    async def run(self, kind: str, raw: bytes) -> JsonReply | AsyncIterator[str]:
        """Run one OpenAI request (``kind``: "chat" or "completions").

        Returns a :class:`JsonReply` (an answer or an error), or, for ``stream: true``,
        vLLM's own stream of server-sent-event strings.
        """
        from pydantic import ValidationError
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.exceptions import VLLMClientError

        Request: Any
        if kind == "chat":
            from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

            Request = ChatCompletionRequest
            serving, create = self._chat, "create_chat_completion"
        else:
            from vllm.entrypoints.openai.completion.protocol import CompletionRequest

            Request = CompletionRequest
            serving, create = self._completion, "create_completion"
        if serving is None:
            return _error(400, f"The model {self.served_name!r} does not serve /{kind}.")
        try:
            request = Request.model_validate_json(raw)
        except ValidationError as exc:
            return _error(422, "Invalid request: " + _summary(exc))
        except VLLMClientError as exc:
            # vLLM's own request validators raise these (not ValueError), e.g. an
            # empty prompt: the caller's mistake, with vLLM's message and parameter.
            return _error(400, f"Invalid request: {exc}", param=getattr(exc, "parameter", None))
        except (ValueError, TypeError) as exc:
            return _error(400, f"Invalid request: {exc}")
        try:
            result = await getattr(serving, create)(request, raw_request=None)
        except (ValueError, VLLMClientError) as exc:
            result = serving.create_error_response(exc)
        except (LookupError, TypeError, AttributeError) as exc:
            # vLLM turning the request into a prompt (messages, tool calls, content
            # parts, the chat template) met a shape it did not expect: the request's
            # shape, not the engine (an engine failure raises vLLM's own errors).
            # vLLM's server answers these 500; a client can fix them, so 400.
            log.warning("vLLM could not process a request: %s: %s", type(exc).__name__, exc)
            return _error(
                400,
                f"The model could not process this request ({type(exc).__name__}: {exc}); "
                "check the messages, tool calls and content parts against the OpenAI API.",
            )
        if isinstance(result, ErrorResponse):
            err = result.error
            return _error(int(err.code or 500), err.message, param=err.param)
        if isinstance(result, AsyncIterator):
            return result
        usage = getattr(result, "usage", None)
        return JsonReply(
            200,
            result.model_dump_json().encode(),
            getattr(usage, "prompt_tokens", 0) or 0,
            getattr(usage, "completion_tokens", 0) or 0,
        )


def _summary(exc: Any) -> str:
    """The first validation errors as ``loc: message`` (never the input itself)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:5]
    )


def _error(
    status: int, message: str, *, err_type: str | None = None, param: str | None = None
) -> JsonReply:
    import json

    body = error_body(status, message, err_type=err_type, param=param)
    return JsonReply(status, json.dumps(body).encode())
