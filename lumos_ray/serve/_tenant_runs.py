"""The runs of ONE tenant, as the gateway reaches them: that tenant's runner actor.

Why here and not the process-wide client of ``lumos_ray.workflows``: that client
serves the process's own tenant (``LUMOS_TENANT``), while one gateway replica serves
callers of many tenants. Each tenant has its own runner (``runner_name(tenant)``)
over a store that filters every statement by that tenant, so a run id of another
tenant is simply not found (404), whatever the caller names.

Run ids a caller sends are validated (a strict charset, no ``/``: an id is also part
of agent thread ids and actor names) before they reach a runner.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from lumos_ray import tracing
from lumos_ray.errors import LumosError, NotFoundError

__all__ = ["RUN_ID_PATTERN", "TenantRuns", "check_run_id", "tenant_runs"]

#: What a run id may look like (the runner's own ids are ``run-<16 hex>``).
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_RUN_ID = re.compile(RUN_ID_PATTERN)


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is well formed; NotFoundError (404) otherwise: an id that
    cannot exist is not found, and nothing of it is echoed back."""
    if not _RUN_ID.match(run_id):
        raise NotFoundError(
            "No such run (run ids are letters, digits, '.', '_' and '-', at most 64).",
            fix="Use the id the start call returned.",
        )
    return run_id


class TenantRuns:
    """Typed calls to one tenant's runner actor (created on first use, re-fetched once
    if it died for good)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self._runner: Any = None

    def _handle(self) -> Any:
        if self._runner is None:
            from lumos_ray.runtime import current_settings, get_or_create_actor, remote_class
            from lumos_ray.workflows._runner import Runner, runner_name

            self._runner = get_or_create_actor(
                runner_name(self.tenant),
                remote_class(Runner),
                not current_settings().embedded,
                self.tenant,
                options={
                    "num_cpus": 0,
                    "max_restarts": -1,
                    "max_task_retries": -1,
                    "max_concurrency": 10_000,
                },
            )
        return self._runner

    async def _invoke(self, call: Callable[[Any], Any]) -> Any:
        from lumos_ray.runtime import is_actor_died, is_remote_task_error, unwrap_error

        for attempt in (1, 2):
            try:
                return await call(self._handle())
            except Exception as exc:
                if is_remote_task_error(exc) and isinstance(unwrap_error(exc), LumosError):
                    raise unwrap_error(exc) from None
                if is_actor_died(exc):
                    self._runner = None
                    if attempt == 1:
                        continue
                raise
        raise AssertionError("unreachable")

    async def start(self, workflow: str, input: Any, run_id: str | None) -> str:
        """Start a run of the gateway's workflow ``workflow`` for this tenant."""
        from lumos_ray.workflows._definition import get_workflow
        from lumos_ray.workflows._runs import _as_data

        wf = get_workflow(workflow)
        body, version = _as_data(wf)
        carrier = tracing.inject()
        rid = await self._invoke(
            lambda r: r.start.remote(wf.name, version, body, input, run_id, carrier)
        )
        return str(rid)

    async def get(self, run_id: str) -> dict[str, Any]:
        check_run_id(run_id)
        return dict(await self._invoke(lambda r: r.get.remote(run_id)))

    async def list_runs(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        return list(await self._invoke(lambda r: r.list_runs.remote(status, limit)))

    async def events(
        self, run_id: str, after: int, wait_s: float
    ) -> tuple[list[dict[str, Any]], str]:
        check_run_id(run_id)
        items, status = await self._invoke(lambda r: r.events.remote(run_id, after, wait_s))
        return list(items), str(status)

    async def resume(self, run_id: str, input: Any) -> dict[str, Any]:
        check_run_id(run_id)
        return dict(await self._invoke(lambda r: r.resume.remote(run_id, input)))

    async def cancel(self, run_id: str) -> dict[str, Any]:
        check_run_id(run_id)
        return dict(await self._invoke(lambda r: r.cancel.remote(run_id)))


_by_tenant: dict[str, TenantRuns] = {}


def tenant_runs(tenant: str) -> TenantRuns:
    """This process's client of ``tenant``'s runs."""
    found = _by_tenant.get(tenant)
    if found is None:
        found = _by_tenant[tenant] = TenantRuns(tenant)
    return found
