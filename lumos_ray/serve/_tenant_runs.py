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
from typing import Any

from lumos_ray import tracing
from lumos_ray.errors import NotFoundError

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
    if it died for good), through the workflows package's client of that tenant."""

    def __init__(self, tenant: str) -> None:
        from lumos_ray.workflows._runs import runner_client

        self.tenant = tenant
        self._client = runner_client(tenant)

    async def start(self, workflow: str, input: Any, run_id: str | None) -> str:
        """Start a run of the gateway's workflow ``workflow`` for this tenant."""
        name, version, body = _definition(workflow)
        return await self._client.start(name, version, body, input, run_id, tracing.inject())

    async def get(self, run_id: str) -> dict[str, Any]:
        return await self._client.get(check_run_id(run_id))

    async def list_runs(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        return await self._client.list_runs(status, limit)

    async def events(
        self, run_id: str, after: int, wait_s: float
    ) -> tuple[list[dict[str, Any]], str]:
        return await self._client.events(check_run_id(run_id), after, wait_s)

    async def resume(self, run_id: str, input: Any) -> dict[str, Any]:
        return await self._client.resume(check_run_id(run_id), input)

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return await self._client.cancel(check_run_id(run_id))

    async def checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        return await self._client.checkpoints(check_run_id(run_id))

    async def fork(
        self,
        run_id: str,
        from_step: str | int,
        outputs: dict[str, Any] | None,
        input: Any,
        new_input: bool,
    ) -> str:
        return await self._client.fork(
            check_run_id(run_id), from_step, outputs, input, new_input, tracing.inject()
        )

    async def add_schedule(
        self,
        schedule_id: str,
        workflow: str,
        input: Any,
        cron: str | None,
        every_s: float | None,
        catchup: str,
    ) -> dict[str, Any]:
        from lumos_ray.workflows._scheduler import check_schedule

        check_schedule(schedule_id, cron, every_s, catchup)
        name, version, body = _definition(workflow)
        return await self._client.add_schedule(
            schedule_id, name, version, body, input, cron, every_s, catchup
        )

    async def list_schedules(self, status: str | None) -> list[dict[str, Any]]:
        return await self._client.list_schedules(status)

    async def cancel_schedule(self, schedule_id: str) -> dict[str, Any]:
        return await self._client.cancel_schedule(schedule_id)


def _definition(workflow: str) -> tuple[str, str, dict[str, Any]]:
    """(name, version, body) of a workflow the gateway knows by name."""
    from lumos_ray.workflows._definition import get_workflow
    from lumos_ray.workflows._runs import _as_data

    wf = get_workflow(workflow)
    body, version = _as_data(wf)
    return wf.name, version, body


_by_tenant: dict[str, TenantRuns] = {}


def tenant_runs(tenant: str) -> TenantRuns:
    """This process's client of ``tenant``'s runs."""
    found = _by_tenant.get(tenant)
    if found is None:
        found = _by_tenant[tenant] = TenantRuns(tenant)
    return found
