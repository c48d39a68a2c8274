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
    "Tool": "lumos_ray.tools",
    "ToolContext": "lumos_ray.tools",
    "tool": "lumos_ray.tools",
    # workflows and runs
    "Workflow": "lumos_ray.workflows",
    "AgentStep": "lumos_ray.workflows",
    "ToolStep": "lumos_ray.workflows",
    "FunctionStep": "lumos_ray.workflows",
    "HumanStep": "lumos_ray.workflows",
    "ParallelStep": "lumos_ray.workflows",
    "MapStep": "lumos_ray.workflows",
    "IfStep": "lumos_ray.workflows",
    "LoopStep": "lumos_ray.workflows",
    "SequenceStep": "lumos_ray.workflows",
    "WorkflowStep": "lumos_ray.workflows",
    "SupervisorStep": "lumos_ray.workflows",
    "HandoffStep": "lumos_ray.workflows",
    "GroupChatStep": "lumos_ray.workflows",
    "load_workflow": "lumos_ray.workflows",
    "register_workflow": "lumos_ray.workflows",
    "RunInfo": "lumos_ray.workflows",
    "RunEvent": "lumos_ray.workflows",
    "start_run": "lumos_ray.workflows",
    "execute_run": "lumos_ray.workflows",
    "cancel_schedule": "lumos_ray.workflows",
    "list_schedules": "lumos_ray.workflows",
    "create_schedule": "lumos_ray.workflows",
    "fork_run": "lumos_ray.workflows",
    "replay_run": "lumos_ray.workflows",
    "list_checkpoints": "lumos_ray.workflows",
    "run_workflow": "lumos_ray.workflows",
    "follow_run": "lumos_ray.workflows",
    "wait_run": "lumos_ray.workflows",
    "get_run": "lumos_ray.workflows",
    "list_runs": "lumos_ray.workflows",
    "resume_run": "lumos_ray.workflows",
    "cancel_run": "lumos_ray.workflows",
}

__all__ = [
    "Agent",
    "AgentHandle",
    "AgentResult",
    "AgentStep",
    "ChatModel",
    "FunctionStep",
    "GroupChatStep",
    "HandoffStep",
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
    "SupervisorStep",
    "Tool",
    "ToolContext",
    "ToolStep",
    "Workflow",
    "WorkflowStep",
    "__version__",
    "cancel_run",
    "cancel_schedule",
    "connect",
    "create_schedule",
    "execute_run",
    "follow_run",
    "fork_run",
    "get_run",
    "list_checkpoints",
    "list_runs",
    "list_schedules",
    "load_workflow",
    "register_workflow",
    "replay_run",
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
        ChatModel,
        OpenAIChatModel,
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
    from lumos_ray.tools import (
        Tool,
        ToolContext,
        tool,
    )
    from lumos_ray.workflows import (
        AgentStep,
        FunctionStep,
        GroupChatStep,
        HandoffStep,
        HumanStep,
        IfStep,
        LoopStep,
        MapStep,
        ParallelStep,
        RunEvent,
        RunInfo,
        SequenceStep,
        SupervisorStep,
        ToolStep,
        Workflow,
        WorkflowStep,
        cancel_run,
        cancel_schedule,
        create_schedule,
        execute_run,
        follow_run,
        fork_run,
        get_run,
        list_checkpoints,
        list_runs,
        list_schedules,
        load_workflow,
        register_workflow,
        replay_run,
        resume_run,
        run_workflow,
        start_run,
        wait_run,
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
