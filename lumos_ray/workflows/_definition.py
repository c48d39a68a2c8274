"""Workflow definitions: the same typed model from Python and from YAML.

A workflow is a list of steps over a shared state dict. Leaf steps (agent, tool,
function, human) do work; composite steps (sequence, parallel, map, if, loop,
workflow) arrange it. Values flow through Jinja expressions evaluated in a sandbox:
``"{{ state.topic }}"`` is the value itself (not its text) when it is the whole
string, so lists and dicts pass through unchanged.

YAML errors name the file, the line and the problem (see ``_yaml_errors``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from lumos_ray.actors.agent import Agent, Resources
from lumos_ray.errors import NotFoundError, WorkflowDefinitionError

__all__ = [
    "AgentStep",
    "FunctionStep",
    "GroupChatStep",
    "HandoffStep",
    "HumanStep",
    "IfStep",
    "LoopStep",
    "MapStep",
    "ParallelStep",
    "SequenceStep",
    "Step",
    "SupervisorStep",
    "ToolStep",
    "Workflow",
    "WorkflowStep",
    "get_workflow",
    "list_workflows",
    "load_workflow",
    "register_workflow",
]

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$")


class StepBase(BaseModel):
    """Fields every step has."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, populate_by_name=True)

    id: str | None = Field(default=None, description="Unique name; also the default output key.")
    output: str | None = Field(default=None, description="State key for the result.")
    when: str | None = Field(default=None, description="Run only if this expression is true.")
    retries: int = Field(default=0, ge=0, description="Extra attempts after a failure.")
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles.")
    backoff_max_s: float = Field(default=30.0, ge=0)
    timeout_s: float | None = Field(default=None, gt=0, description="Per attempt.")
    resources: Resources = Field(default_factory=Resources)

    @field_validator("id", "output")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        if v is not None and not _ID.match(v):
            raise ValueError("must be an identifier (letters, digits, '_', '-')")
        return v

    @property
    def kind(self) -> str:
        return type(self).__name__.removesuffix("Step").lower()

    def key(self) -> str | None:
        return self.output or self.id


class AgentStep(StepBase):
    agent: str | Agent = Field(description="An agent of the workflow's `agents`, or a spec.")
    input: Any = Field(default="{{ input }}", description="The user message (expression).")
    thread: str | None = Field(
        default=None, description="Thread id (expression); default per step."
    )
    concurrent_input: Literal["reject", "enqueue", "interrupt", "rollback"] | None = Field(
        default=None,
        description="What this step's input does if its thread is busy with another turn "
        "(a named thread another run or a user also talks on); default: the agent's own "
        "concurrent_input.",
    )


class ToolStep(StepBase):
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Tool relaxations, e.g. {'sql': {'allow_write': true}}."
    )
    workspace: str | None = None


class FunctionStep(StepBase):
    function: str | Callable[..., Any] = Field(description="'module:attr' or a callable.")
    args: dict[str, Any] | None = Field(
        default=None, description="Keyword arguments (expressions); None = pass the state."
    )


class HumanSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    prompt: str = "Input required"
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {}, alias="schema", description="JSON Schema of the input."
    )


class HumanStep(StepBase):
    human: HumanSpec


class SequenceStep(StepBase):
    steps: list[Step]


class ParallelStep(StepBase):
    parallel: list[Step] = Field(min_length=1)


class MapSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    over: str = Field(description="Expression giving a list.")
    step: Step
    max_concurrency: int = Field(default=16, ge=1)


class MapStep(StepBase):
    map: MapSpec


class IfStep(StepBase):
    if_: str = Field(alias="if", description="Condition expression.")
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")


class LoopSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: list[Step] = Field(min_length=1)
    until: str | None = Field(default=None, description="Stop when true (after each pass).")
    max_iterations: int = Field(ge=1, le=10_000, description="The bound; always required.")


class LoopStep(StepBase):
    loop: LoopSpec


class WorkflowStep(StepBase):
    workflow: str | Workflow = Field(description="A registered name, a YAML path, or a Workflow.")
    input: Any = Field(default_factory=dict)


# -- multi-agent patterns (executed by _patterns) --------------------------------------
class _PatternStep(StepBase):
    """A step that runs a conversation of several agents, one checkpoint per turn."""

    # Agent specs derived for this step (a supervisor with its sub-agents as tools, a
    # handoff agent with its transfer tools), built once per step object so the
    # runner's agent handles, kept by spec identity, are reused across runs.
    _specs: dict[str, Agent] = PrivateAttr(default_factory=dict)


class SupervisorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent: str = Field(description="The supervising agent (of the workflow's `agents`).")
    agents: list[str] = Field(
        min_length=1, description="Sub-agents it may ask, each offered to it as a tool."
    )
    input: Any = Field(default="{{ input }}", description="The request (expression).")
    thread: str | None = Field(
        default=None, description="The supervisor's thread (expression); default per step."
    )


class SupervisorStep(_PatternStep):
    """The supervisor asks its sub-agents (each in its own actor) and answers. Output:
    ``{"output", "transcript"}``."""

    supervisor: SupervisorSpec


class HandoffSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agents: list[str] = Field(
        min_length=2, description="Agents of the conversation; the first one starts."
    )
    routes: dict[str, list[str]] | None = Field(
        default=None, description="Who may hand over to whom; default: anyone to anyone."
    )
    input: Any = Field(default="{{ input }}", description="The user message (expression).")
    max_handoffs: int = Field(
        default=10, ge=0, le=1000, description="More handoffs than this fail the step."
    )


class HandoffStep(_PatternStep):
    """The conversation moves between agents through ``transfer_to_<agent>`` tools; the
    agent that answers without transferring ends it. Output: ``{"output", "agent",
    "transcript", "handoffs"}``."""

    handoff: HandoffSpec


class GroupChatSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agents: list[str] = Field(min_length=2, description="The participants.")
    speaker: Literal["round_robin", "model"] = Field(
        default="round_robin", description="How the next speaker is chosen."
    )
    selector: str | None = Field(
        default=None, description="The agent that picks each speaker (speaker: model)."
    )
    max_rounds: int = Field(default=10, le=10_000, description="Speaker turns at most.")
    keyword: str | None = Field(
        default=None, description="Stop after a message that contains this text."
    )
    until: str | None = Field(
        default=None,
        description="Stop when true after a message (expression over `message`, "
        "`transcript`, `round`, `state`, `input`).",
    )
    input: Any = Field(default="{{ input }}", description="The opening message (expression).")

    @field_validator("max_rounds")
    @classmethod
    def _rounds(cls, v: int) -> int:
        if v < 1:
            raise ValueError(
                f"max_rounds is {v}: a group chat needs at least 1 round (one speaker turn)"
            )
        return v

    @field_validator("until")
    @classmethod
    def _expr(cls, v: str | None) -> str | None:
        if v is not None:
            from lumos_ray.workflows._expr import _compiled

            try:
                _compiled(v.strip().removeprefix("{{").removesuffix("}}"))
            except WorkflowDefinitionError as exc:
                raise ValueError(exc.message) from None
        return v

    @model_validator(mode="after")
    def _selector(self) -> GroupChatSpec:
        if self.speaker == "model" and not self.selector:
            raise ValueError("speaker: model needs `selector`, the agent that picks speakers")
        if self.speaker == "round_robin" and self.selector:
            raise ValueError("`selector` is used only with speaker: model")
        return self


class GroupChatStep(_PatternStep):
    """Agents take turns on one conversation (round robin, or chosen by a selector
    agent) until a termination condition. Output: ``{"output", "transcript",
    "rounds", "stopped"}``."""

    group_chat: GroupChatSpec

    @property
    def kind(self) -> str:
        return "group_chat"


_KINDS: dict[str, type[StepBase]] = {
    "agent": AgentStep,
    "tool": ToolStep,
    "function": FunctionStep,
    "human": HumanStep,
    "steps": SequenceStep,
    "parallel": ParallelStep,
    "map": MapStep,
    "if": IfStep,
    "loop": LoopStep,
    "workflow": WorkflowStep,
    "supervisor": SupervisorStep,
    "handoff": HandoffStep,
    "group_chat": GroupChatStep,
}


def _step_kind(v: Any) -> str | None:
    if isinstance(v, StepBase):
        return next(k for k, cls in _KINDS.items() if isinstance(v, cls))
    if isinstance(v, dict):
        found = [k for k in _KINDS if k in v or (k == "if" and "if_" in v)]
        return found[0] if len(found) == 1 else None
    return None


Step = Annotated[
    Annotated[AgentStep, Tag("agent")]
    | Annotated[ToolStep, Tag("tool")]
    | Annotated[FunctionStep, Tag("function")]
    | Annotated[HumanStep, Tag("human")]
    | Annotated[SequenceStep, Tag("steps")]
    | Annotated[ParallelStep, Tag("parallel")]
    | Annotated[MapStep, Tag("map")]
    | Annotated[IfStep, Tag("if")]
    | Annotated[LoopStep, Tag("loop")]
    | Annotated[WorkflowStep, Tag("workflow")]
    | Annotated[SupervisorStep, Tag("supervisor")]
    | Annotated[HandoffStep, Tag("handoff")]
    | Annotated[GroupChatStep, Tag("group_chat")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step needs exactly one of: " + ", ".join(_KINDS),
    ),
]


class Workflow(BaseModel):
    """A named workflow: typed input, agents, steps and an output expression."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    description: str = ""
    input_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema the run input must satisfy."
    )
    state_schema: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema of the state: checked after every step (its `required` "
        "only at the end), so a step that writes a wrongly typed value fails at once.",
    )
    agents: list[Agent] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)
    output: Any = Field(default=None, description="Expression for the result; default: state.")
    source: str | None = Field(default=None, description="File it was loaded from.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("must be an identifier (letters, digits, '_', '-')")
        return v

    @model_validator(mode="after")
    def _check_refs(self) -> Workflow:
        names = {a.name for a in self.agents}
        seen: set[str] = set()
        for step in iter_steps(self.steps):
            if step.id is not None:
                if step.id in seen:
                    raise ValueError(f"duplicate step id {step.id!r}")
                seen.add(step.id)
            if isinstance(step, AgentStep) and isinstance(step.agent, str):
                if step.agent not in names:
                    raise ValueError(
                        f"step uses agent {step.agent!r}, which is not defined under `agents` "
                        f"(defined: {sorted(names) or 'none'})"
                    )
        from lumos_ray.workflows._pattern_checks import check_agents

        check_agents(self, iter_steps(self.steps))
        return self

    def agent(self, name: str) -> Agent:
        for a in self.agents:
            if a.name == name:
                return a
        raise NotFoundError(f"workflow {self.name!r} has no agent {name!r}")


def iter_steps(steps: list[Any]) -> Any:
    """Every step, depth first (nested workflows are not entered)."""
    for s in steps:
        yield s
        if isinstance(s, SequenceStep):
            yield from iter_steps(s.steps)
        elif isinstance(s, ParallelStep):
            yield from iter_steps(s.parallel)
        elif isinstance(s, MapStep):
            yield from iter_steps([s.map.step])
        elif isinstance(s, IfStep):
            yield from iter_steps(s.then + s.else_)
        elif isinstance(s, LoopStep):
            yield from iter_steps(s.loop.steps)


for _m in (SequenceStep, ParallelStep, MapSpec, MapStep, IfStep, LoopSpec, LoopStep, WorkflowStep):
    _m.model_rebuild()
Workflow.model_rebuild()


# -- loading & registry -------------------------------------------------------------
_registry: dict[str, Workflow] = {}


def load_workflow(path: str | Path) -> Workflow:
    """Parse and validate a YAML workflow; errors say file:line: problem."""
    from lumos_ray.workflows._yaml_errors import parse_yaml_with_lines

    p = Path(path)
    data, locate = parse_yaml_with_lines(p)
    if not isinstance(data, dict):
        raise WorkflowDefinitionError(f"{p}:1: a workflow file must be a mapping with `steps`")
    data.setdefault("name", re.sub(r"[^A-Za-z0-9_-]", "_", p.stem))
    data["source"] = str(p.resolve())
    try:
        return Workflow.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _strip_union_tags(err["loc"])
        line = locate(loc)
        where = ".".join(str(x) for x in loc) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise WorkflowDefinitionError(
            f"{p}:{line}: {where}: {err['msg']}{more}", file=str(p), line=line
        ) from None


def _strip_union_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union tags (the step kind after a list index or `step`)."""
    out: list[Any] = []
    for x in loc:
        if out and (isinstance(out[-1], int) or out[-1] == "step") and x in _KINDS:
            continue
        out.append(x)
    return tuple(out)


def register_workflow(wf: Workflow) -> Workflow:
    """Make ``wf`` startable by name in this process (e.g. over HTTP)."""
    _registry[wf.name] = wf
    return wf


def _workflow_dirs() -> list[Path]:
    import os

    dirs = [Path(d) for d in os.environ.get("LUMOS_WORKFLOWS_DIR", "").split(os.pathsep) if d]
    return [*dirs, Path("configs/workflows")]


def list_workflows() -> dict[str, str]:
    """name -> source, for registered workflows and YAML files of the workflow dirs."""
    found = {name: wf.source or "python" for name, wf in _registry.items()}
    for d in _workflow_dirs():
        for f in sorted(d.glob("*.y*ml")) if d.is_dir() else []:
            found.setdefault(f.stem, str(f))
    return found


def get_workflow(name_or_path: str) -> Workflow:
    if name_or_path in _registry:
        return _registry[name_or_path]
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return load_workflow(p)
    for d in _workflow_dirs():
        for ext in (".yaml", ".yml"):
            if (d / f"{name_or_path}{ext}").is_file():
                return load_workflow(d / f"{name_or_path}{ext}")
    raise NotFoundError(
        f"No workflow named {name_or_path!r}.",
        fix="Put NAME.yaml in configs/workflows/ (or a dir in LUMOS_WORKFLOWS_DIR), or "
        "register it with lumos_ray.register_workflow().",
    )
