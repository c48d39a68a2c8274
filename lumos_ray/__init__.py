"""lumos_ray: a distributed runtime for AI agents on Ray.

The public API is listed in ``__all__``. Names are imported lazily (PEP 562) so that
``import lumos_ray`` and the ``lumos`` CLI start fast; nothing starts Ray on import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # settings, errors, runtime
    "LumosSettings": "lumos_ray.config",
    "LumosError": "lumos_ray.errors",
    "connect": "lumos_ray.runtime",
    "shutdown": "lumos_ray.runtime",
    # agents and tools
    "Agent": "lumos_ray.actors",
    "AgentHandle": "lumos_ray.actors",
    "AgentResult": "lumos_ray.actors",
    "ChatModel": "lumos_ray.actors",
    "OpenAIChatModel": "lumos_ray.actors",
    "Tool": "lumos_ray.actors",
    "ToolContext": "lumos_ray.actors",
    "tool": "lumos_ray.actors",
    # workflows and runs
    "Workflow": "lumos_ray.actors",
    "AgentStep": "lumos_ray.actors",
    "ToolStep": "lumos_ray.actors",
    "FunctionStep": "lumos_ray.actors",
    "HumanStep": "lumos_ray.actors",
    "ParallelStep": "lumos_ray.actors",
    "MapStep": "lumos_ray.actors",
    "IfStep": "lumos_ray.actors",
    "LoopStep": "lumos_ray.actors",
    "SequenceStep": "lumos_ray.actors",
    "WorkflowStep": "lumos_ray.actors",
    "load_workflow": "lumos_ray.actors",
    "register_workflow": "lumos_ray.actors",
    "RunInfo": "lumos_ray.actors",
    "RunEvent": "lumos_ray.actors",
    "start_run": "lumos_ray.actors",
    "run_workflow": "lumos_ray.actors",
    "follow_run": "lumos_ray.actors",
    "wait_run": "lumos_ray.actors",
    "get_run": "lumos_ray.actors",
    "list_runs": "lumos_ray.actors",
    "resume_run": "lumos_ray.actors",
    "cancel_run": "lumos_ray.actors",
}

__all__ = [
    "Agent",
    "AgentHandle",
    "AgentResult",
    "AgentStep",
    "ChatModel",
    "FunctionStep",
    "HumanStep",
    "IfStep",
    "LoopStep",
    "LumosError",
    "LumosSettings",
    "MapStep",
    "OpenAIChatModel",
    "ParallelStep",
    "RunEvent",
    "RunInfo",
    "SequenceStep",
    "Tool",
    "ToolContext",
    "ToolStep",
    "Workflow",
    "WorkflowStep",
    "__version__",
    "cancel_run",
    "connect",
    "follow_run",
    "get_run",
    "list_runs",
    "load_workflow",
    "register_workflow",
    "resume_run",
    "run_workflow",
    "shutdown",
    "start_run",
    "tool",
    "wait_run",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from lumos_ray.actors import (
        Agent,
        AgentHandle,
        AgentResult,
        AgentStep,
        ChatModel,
        FunctionStep,
        HumanStep,
        IfStep,
        LoopStep,
        MapStep,
        OpenAIChatModel,
        ParallelStep,
        RunEvent,
        RunInfo,
        SequenceStep,
        Tool,
        ToolContext,
        ToolStep,
        Workflow,
        WorkflowStep,
        cancel_run,
        follow_run,
        get_run,
        list_runs,
        load_workflow,
        register_workflow,
        resume_run,
        run_workflow,
        start_run,
        tool,
        wait_run,
    )
    from lumos_ray.config import (
        LumosSettings,
    )
    from lumos_ray.errors import (
        LumosError,
    )
    from lumos_ray.runtime import (
        connect,
        shutdown,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lumos_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
