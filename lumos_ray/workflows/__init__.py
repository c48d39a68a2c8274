"""Workflows: definitions (Python and YAML), expressions, the durable engine, the
runner actor, and the Python API for runs (start, follow, wait, resume, cancel)."""

from __future__ import annotations

from lumos_ray.workflows._definition import (
    AgentStep,
    FunctionStep,
    HumanStep,
    IfStep,
    LoopStep,
    MapStep,
    ParallelStep,
    SequenceStep,
    ToolStep,
    Workflow,
    WorkflowStep,
    get_workflow,
    list_workflows,
    load_workflow,
    register_workflow,
)
from lumos_ray.workflows._runs import (
    RunEvent,
    RunInfo,
    cancel_run,
    execute_run,
    follow_run,
    get_run,
    list_runs,
    resume_run,
    run_workflow,
    start_run,
    wait_run,
)

__all__ = [
    "AgentStep",
    "FunctionStep",
    "HumanStep",
    "IfStep",
    "LoopStep",
    "MapStep",
    "ParallelStep",
    "RunEvent",
    "RunInfo",
    "SequenceStep",
    "ToolStep",
    "Workflow",
    "WorkflowStep",
    "cancel_run",
    "execute_run",
    "follow_run",
    "get_run",
    "get_workflow",
    "list_runs",
    "list_workflows",
    "load_workflow",
    "register_workflow",
    "resume_run",
    "run_workflow",
    "start_run",
    "wait_run",
]
