"""One exception hierarchy for the whole platform.

Every error carries a stable ``code`` (``LUMOS-Exxx``) whose help text says how to
fix the problem. Ray ships exceptions between processes with pickle, so every class
rebuilds itself from its constructor arguments (``__reduce__``) instead of relying on
``BaseException``'s default, which would drop the keyword-only fields.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ERROR_HELP",
    "AdapterError",
    "AgentConcurrencyError",
    "AgentStepLimitError",
    "AuthError",
    "AuthenticationError",
    "ConfigError",
    "ConnectionFailedError",
    "DatasetError",
    "FederationError",
    "InputValidationError",
    "JobError",
    "LumosError",
    "ModelError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RagError",
    "RunCancelledError",
    "RunStateError",
    "ServeError",
    "StepTimeoutError",
    "ThreadBusyError",
    "ToolArgumentError",
    "ToolError",
    "ToolNotAllowedError",
    "TurnInterruptedError",
    "WorkflowDefinitionError",
    "error_help",
]

#: code -> how to fix it. A unit test checks every code used by a class is here.
ERROR_HELP: dict[str, str] = {
    "LUMOS-E000": "Unexpected internal error. Re-run with LUMOS_DEBUG=1 for the full "
    "traceback and report it with the run id.",
    "LUMOS-E001": "The configuration is invalid. Fix the field named in the message; "
    "`lumos init` writes a valid example project.",
    "LUMOS-E002": "Could not reach the Ray cluster. Check --address / LUMOS_RAY_ADDRESS "
    "(use `auto` for a cluster started with `ray start --head` on this machine, or "
    "`ray://HOST:10001`), or leave it unset to start an embedded local cluster.",
    "LUMOS-E003": "The named object does not exist. List what exists with the matching "
    "`lumos ... list` command and check the spelling.",
    "LUMOS-E010": "The workflow definition is invalid. Fix the file at the line shown; "
    "see configs/workflows/ for valid examples.",
    "LUMOS-E011": "The run is not in a state that allows this operation. Check it with "
    "`lumos runs show RUN_ID`.",
    "LUMOS-E012": "The input does not match the declared type. Send a JSON value that "
    "validates against the schema shown in the message.",
    "LUMOS-E013": "A step exceeded its timeout. Raise `timeout_s` on the step, or make "
    "the step faster.",
    "LUMOS-E014": "The run was cancelled. Start a new run if the work is still needed.",
    "LUMOS-E015": "The agent used all its model calls without a final answer. Raise "
    "`max_steps` on the agent, or make the instructions/tools lead to an answer sooner.",
    "LUMOS-E016": "The thread is busy: a turn is running on it and the agent (or this "
    "call) rejects concurrent input (`concurrent_input='reject'`). Wait for the turn to "
    "finish and send again, or choose 'enqueue', 'interrupt' or 'rollback'.",
    "LUMOS-E017": "This turn was cancelled by a newer input on the same thread "
    "(`concurrent_input='interrupt'` keeps its messages so far, marked interrupted; "
    "'rollback' discards them). Tools it had started are not undone: check the error's "
    "`tools_started` and send the input again if it is still needed.",
    "LUMOS-E020": "A tool failed. The message carries the tool's own error; the model "
    "sees it and may retry with other arguments.",
    "LUMOS-E021": "The tool arguments do not match the tool's JSON Schema. Pass the "
    "fields the schema requires with the right types.",
    "LUMOS-E022": "The tool refused the operation for safety (path outside the "
    "workspace, private network address, or code execution without a sandbox). Change "
    "the request, or explicitly allow it in the tool's settings.",
    "LUMOS-E030": "The chat model call failed. Check the model's base URL, name and API "
    "key, and that the server is up (`lumos serve status`).",
    "LUMOS-E040": "The serving layer could not handle the request. Check `lumos serve "
    "status` and the deployment logs.",
    "LUMOS-E041": "Authentication failed. Send `Authorization: Bearer <key>` with a valid API key.",
    "LUMOS-E042": "Quota or rate limit exceeded. Wait and retry, or move to a higher plan.",
    "LUMOS-E043": "The adapter could not be found or loaded. List adapters with "
    "`lumos serve adapters list` and register it with `lumos serve adapters add`.",
    "LUMOS-E050": "The dataset is invalid. Fix the line named in the message (each line "
    "must be a JSON object with the fields of the chosen format).",
    "LUMOS-E051": "The job failed. See `lumos finetune logs JOB_ID` / `lumos jobs logs "
    "JOB_ID` for its output.",
    "LUMOS-E060": "The federation failed. Check that the SuperLink is reachable, enough "
    "SuperNodes are connected for `min_available_sites`, and the certificates match.",
    "LUMOS-E070": "The RAG operation failed. Check the collection name (`lumos rag "
    "stats`) and the file named in the message.",
    "LUMOS-E080": "The API key is missing, unknown, expired or revoked. Send "
    "`Authorization: Bearer lumos_...` with a live key of your tenant; an admin creates "
    "one with `lumos keys create TENANT --role developer`.",
    "LUMOS-E081": "Your key's role does not allow this action (viewer: read; developer: "
    "read, run, resume, cancel, submit, chat; admin: also keys, tenants, plans, audit). "
    "Ask a tenant admin for a key with the needed role.",
    "LUMOS-E082": "The tenant already runs as many agents at once as its plan allows. "
    "Wait for one to finish (or release its slot), or move the tenant to a higher plan "
    "(`lumos tenants set-plan TENANT PLAN`).",
}


def error_help(code: str) -> str:
    """Return the fix-it text for ``code`` (unknown codes get the internal-error text)."""
    return ERROR_HELP.get(code, ERROR_HELP["LUMOS-E000"])


class LumosError(Exception):
    """Base class: a message, a stable code and how to fix it."""

    code: ClassVar[str] = "LUMOS-E000"

    def __init__(self, message: str, *, fix: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix or error_help(self.code)
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fix, self.details))

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form used by the CLI's --json output and the HTTP API."""
        return {
            "code": self.code,
            "type": type(self).__name__,
            "message": self.message,
            "fix": self.fix,
            **({"details": self.details} if self.details else {}),
        }


def _rebuild(cls: type[LumosError], message: str, fix: str, details: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    LumosError.__init__(err, message, fix=fix, **details)
    return err


class ConfigError(LumosError):
    code = "LUMOS-E001"


class ConnectionFailedError(LumosError):
    code = "LUMOS-E002"


class NotFoundError(LumosError):
    code = "LUMOS-E003"


class WorkflowDefinitionError(ConfigError):
    code = "LUMOS-E010"


class RunStateError(LumosError):
    code = "LUMOS-E011"


class InputValidationError(LumosError):
    code = "LUMOS-E012"


class StepTimeoutError(LumosError):
    code = "LUMOS-E013"


class RunCancelledError(LumosError):
    code = "LUMOS-E014"


class AgentStepLimitError(LumosError):
    code = "LUMOS-E015"


class ThreadBusyError(LumosError):
    """A second input arrived on a thread whose turn is still running, and the
    strategy is ``reject`` (``details``: ``thread_id``, ``agent``)."""

    code = "LUMOS-E016"


class TurnInterruptedError(LumosError):
    """A running turn was cancelled by a newer input on its thread (``details``:
    ``strategy`` 'interrupt' or 'rollback', ``thread_id``, ``kept_messages``,
    ``tools_started``, ``tools_unfinished``)."""

    code = "LUMOS-E017"


class ToolError(LumosError):
    code = "LUMOS-E020"


class ToolArgumentError(ToolError):
    code = "LUMOS-E021"


class ToolNotAllowedError(ToolError):
    code = "LUMOS-E022"


class ModelError(LumosError):
    code = "LUMOS-E030"


class ServeError(LumosError):
    code = "LUMOS-E040"


class AuthError(ServeError):
    code = "LUMOS-E041"


class QuotaExceededError(ServeError):
    code = "LUMOS-E042"


class AuthenticationError(AuthError):
    """No valid credentials: the key is missing, malformed, unknown, expired or revoked
    (HTTP 401). Messages never echo the key."""

    code = "LUMOS-E080"


class PermissionDeniedError(LumosError):
    """Authenticated, but the key's role (or tenant) does not allow the action (HTTP 403)."""

    code = "LUMOS-E081"


class AgentConcurrencyError(QuotaExceededError):
    """A tenant's plan allows no more concurrent agents right now (``details`` carries
    ``retry_after_s``, ``limit`` and ``plan``)."""

    code = "LUMOS-E082"


class AdapterError(ServeError):
    code = "LUMOS-E043"


class DatasetError(ConfigError):
    code = "LUMOS-E050"


class JobError(LumosError):
    code = "LUMOS-E051"


class FederationError(LumosError):
    code = "LUMOS-E060"


class RagError(LumosError):
    code = "LUMOS-E070"
