"""Remote tasks: run a function as a Ray task with resources, await it, cancel it.

Cancelling is two steps because ``ray.cancel`` interrupts a running task by raising
KeyboardInterrupt in it (so it can clean up), which code stuck in C or code that
swallows the interrupt never sees: after a grace period the worker is force-killed.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from lumos_ray.runtime._cluster import ensure_connected

__all__ = ["TaskHandle", "TaskOptions", "submit_task"]

T = TypeVar("T")

#: Default seconds a cancelled task gets to stop on its KeyboardInterrupt.
DEFAULT_CANCEL_GRACE_S = 5.0


@dataclass(frozen=True)
class TaskOptions:
    """Resources and identity of one task (``None`` = Ray's default)."""

    name: str | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None
    resources: dict[str, float] | None = None
    #: Tools and steps have side effects: not retried unless asked for.
    max_retries: int = 0
    #: Seconds a cancelled task gets to stop on its KeyboardInterrupt before its
    #: worker is killed (when the awaiting caller is cancelled).
    cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S
    extra: dict[str, Any] = field(default_factory=dict)

    def ray_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"max_retries": self.max_retries, **self.extra}
        for key in ("name", "num_cpus", "num_gpus", "memory", "resources"):
            value = getattr(self, key)
            if value is not None:
                opts[key] = value
        return opts


def _interruptible(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Task body: run ``fn`` with Python's own SIGINT handler, so ``ray.cancel`` works.

    A pooled worker may have run code that replaced the handler (Ray Train's fit, vLLM),
    which would make the interrupt a no-op. Tasks run on the worker's main thread.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    try:
        return fn(*args, **kwargs)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


_REMOTE: Any = None
_REMOTE_LOCK = threading.Lock()
_escalations: set[asyncio.Future[None]] = set()


def _remote() -> Any:
    global _REMOTE
    with _REMOTE_LOCK:
        if _REMOTE is None:
            import ray

            _REMOTE = ray.remote(_interruptible)
        return _REMOTE


class TaskHandle(Generic[T]):
    """A submitted task: await it (``await handle`` / :meth:`get`) or cancel it."""

    def __init__(self, ref: Any, cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S) -> None:
        self.ref = ref
        self.cancel_grace_s = cancel_grace_s

    def __await__(self) -> Any:
        return self._await().__await__()

    async def _await(self) -> T:
        try:
            return await self.ref
        except asyncio.CancelledError:
            # The caller gave up (a step timeout): stop the task instead of leaking it.
            self.cancel_then_kill(self.cancel_grace_s)
            raise

    def get(self, timeout_s: float | None = None) -> T:
        """Block for the result (``GetTimeoutError`` after ``timeout_s``)."""
        import ray

        return ray.get(self.ref, timeout=timeout_s)

    def done(self) -> bool:
        import ray

        ready, _ = ray.wait([self.ref], timeout=0)
        return bool(ready)

    def cancel(self, *, force: bool = False) -> None:
        """Interrupt the task (``force``: kill its worker)."""
        import ray

        ray.cancel(self.ref, force=force)

    def cancel_then_kill(self, grace_s: float = DEFAULT_CANCEL_GRACE_S) -> None:
        """Interrupt now; kill the worker if the task still runs after ``grace_s``.
        From inside an event loop the escalation runs in the background."""
        self.cancel()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if not self._wait(grace_s):
                self.cancel(force=True)
            return
        task = asyncio.ensure_future(self._escalate(grace_s))
        _escalations.add(task)
        task.add_done_callback(_escalations.discard)

    def _wait(self, timeout_s: float) -> bool:
        import ray

        done, _ = ray.wait([self.ref], timeout=timeout_s)
        return bool(done)

    async def _escalate(self, grace_s: float) -> None:
        if not await asyncio.to_thread(self._wait, grace_s):
            self.cancel(force=True)


def submit_task(
    fn: Callable[..., T], *args: Any, options: TaskOptions | None = None, **kwargs: Any
) -> TaskHandle[T]:
    """Run ``fn(*args, **kwargs)`` as a Ray task (connecting first if needed).

    ``fn`` must be importable or picklable by value on the workers (cloudpickle).
    """
    ensure_connected()
    options = options or TaskOptions()
    ref = _remote().options(**options.ray_options()).remote(fn, args, kwargs)
    return TaskHandle(ref, options.cancel_grace_s)
