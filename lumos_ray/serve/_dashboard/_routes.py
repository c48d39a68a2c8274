"""The dashboard's routes under ``/ui``: login, runs, a run (live), usage, threads,
adapters. Server-rendered pages; the gateway includes this router.

Auth: the gateway's front middleware lets ``/ui`` through without an
``Authorization`` header (a browser cannot send one on a page load); every route here
authenticates the session cookie with the gateway's own authenticator
(``gateway.auth``), so a dashboard page and an API call with the same key see the same
tenant and role. A page runs with the key's principal in the request state, so the
runs API's own handlers (events, resume, cancel) are reused as they are: same tenant
scoping, same audit. Actions check the role first: a viewer gets 403 (and never sees
the buttons). Page views count against the key's rate limit, not against the plan's
monthly API-call quota.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import RedirectResponse, Response

from lumos_ray.errors import (
    AuthenticationError,
    InputValidationError,
    LumosError,
    NotFoundError,
    PermissionDeniedError,
)
from lumos_ray.platform import ACTIONS, Principal
from lumos_ray.serve._dashboard import _data
from lumos_ray.serve._dashboard._devstatus import dev_errors
from lumos_ray.serve._dashboard._forms import MAX_VALUE_CHARS, form_fields, parse_form
from lumos_ray.serve._dashboard._i18n import LANG_COOKIE, LANGS, negotiate, translate
from lumos_ray.serve._dashboard._render import render
from lumos_ray.serve._dashboard._security import (
    MAX_KEY_CHARS,
    SESSION_COOKIE,
    csrf_token,
    page_headers,
    safe_next,
    same_origin,
    session_cookie,
    valid_csrf,
)
from lumos_ray.store import RUN_STATES

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui", include_in_schema=False)

_MAX_FORM_BYTES = 256 * 1024
_MAX_FORM_FIELDS = 60
#: Files /ui/static may serve (nothing else, whatever the path says).
_STATIC_TYPES = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "vendor/htmx.min.js": "text/javascript",
    "vendor/uPlot.iife.min.js": "text/javascript",
    "vendor/uPlot.min.css": "text/css",
}


class _LoginNeeded(Exception):
    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Session:
    """Who looks at a page: their principal (None when the gateway has auth off),
    tenant, language, whether they may act (resume/cancel), and the form token."""

    principal: Principal | None
    key: str
    tenant: str
    lang: str
    can_act: bool
    csrf: str

    def t(self, key: str, **values: Any) -> str:
        return translate(self.lang, key, **values)


def _gateway(request: Request) -> Any:
    return request.scope["state"]["gateway"]


def _root(request: Request) -> str:
    """The app's route prefix ("" at /): links and cookies live under it."""
    return str(request.scope.get("root_path") or "").rstrip("/")


def _redirect(request: Request, path: str) -> Response:
    """303 to ``path`` (already under the route prefix when it starts with it)."""
    root = _root(request)
    target = path if root and path.startswith(root + "/") else root + path
    return RedirectResponse(target, status_code=303, headers=page_headers())


def _lang(request: Request) -> str:
    return negotiate(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE))


def _may(principal: Principal | None, action: str) -> bool:
    return principal is None or principal.role.rank >= ACTIONS[action].rank


async def _session(request: Request) -> Session:
    """The page's session from its cookie (LoginNeeded without a valid one)."""
    gw = _gateway(request)
    lang = _lang(request)
    if not gw.auth.enabled:  # no keys configured: the API is open, so is the dashboard
        return Session(None, "", gw.default_tenant(), lang, True, csrf_token(""))
    key = request.cookies.get(SESSION_COOKIE) or ""
    if not key or len(key) > MAX_KEY_CHARS:
        raise _LoginNeeded()
    try:
        principal: Principal = await gw.auth.authenticate(f"Bearer {key}")
    except AuthenticationError:
        raise _LoginNeeded("login.expired") from None
    if gw.admission is not None:
        await gw.admission.admit(principal.key_id or "anonymous", principal.tenant)
    request.scope.setdefault("state", {})["principal"] = principal
    return Session(
        principal, key, principal.tenant, lang, _may(principal, "resume"), csrf_token(key)
    )


def _unwrap(exc: BaseException) -> BaseException:
    """The LumosError inside a Ray error (a runner's refusal), if there is one."""
    cur: BaseException | None = exc
    for _ in range(10):
        if cur is None or isinstance(cur, LumosError):
            return cur or exc
        nxt = getattr(cur, "cause", None) or cur.__cause__
        cur = nxt if isinstance(nxt, BaseException) else None
    return exc


def _status(err: LumosError) -> int:
    from lumos_ray.serve._errors import status_for

    return status_for(err)


def _context(request: Request, s: Session, nav: str, **extra: Any) -> dict[str, Any]:
    return {
        "s": s,
        "t": s.t,
        "lang": s.lang,
        "langs": LANGS,
        "nav": nav,
        "root": _root(request),
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        "dev_errors": dev_errors(),
        "auth_on": s.principal is not None,
        **extra,
    }


def _error_page(request: Request, err: LumosError, status: int) -> Response:
    lang = _lang(request)
    s = Session(None, "", "", lang, False, "")
    ctx = _context(request, s, "", err=err, status=status)
    ctx["auth_on"] = True
    return render("error.html", ctx, status=status)


Handler = Callable[..., Awaitable[Response]]


def _page(fn: Handler) -> Handler:
    """Turn a missing session into a redirect to the login page, and errors into an
    error page with the right status (never a stack trace)."""

    @functools.wraps(fn)
    async def wrapper(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await fn(request, *args, **kwargs)
        except _LoginNeeded as need:
            root = _root(request)
            target = safe_next(request.url.path if request.method == "GET" else None, root)
            q = {"next": target, **({"why": need.reason} if need.reason else {})}
            return _redirect(request, f"/ui/login?{urlencode(q)}")
        except Exception as exc:
            cause = _unwrap(exc)
            if isinstance(cause, LumosError):
                return _error_page(request, cause, _status(cause))
            log.exception("Dashboard page failed", exc_info=exc)
            return _error_page(request, LumosError("Internal error in the dashboard."), 500)

    return wrapper


async def _form(request: Request) -> dict[str, str]:
    """The posted form, bounded in size and fields (a file upload is refused)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > _MAX_FORM_BYTES:
        raise InputValidationError(
            "The form is too large.", fix="Send less text (at most 256 KiB in all)."
        )
    form = await request.form(max_files=0, max_fields=_MAX_FORM_FIELDS)
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _check_post(request: Request, s: Session, form: dict[str, str]) -> None:
    """CSRF: a POST must come from our own origin AND carry the session's token."""
    if not same_origin(request.headers, request.url.scheme, request.headers.get("host")):
        raise PermissionDeniedError(
            "This form was not sent from the dashboard's own page (Origin check).",
            fix="Open the dashboard at its own address and use its buttons.",
        )
    if not valid_csrf(s.key, form.get("csrf")):
        raise PermissionDeniedError(
            "The form's security token is missing or stale.",
            fix="Reload the page and send the form again.",
        )


def _require(s: Session, action: str) -> None:
    if not _may(s.principal, action):
        assert s.principal is not None
        need = ACTIONS[action]
        raise PermissionDeniedError(
            f"This action needs the {need.value} role; key {s.principal.key_id} is "
            f"{s.principal.role.value}.",
            fix="Sign in with a key with a higher role (a tenant admin can create one).",
        )


# -- static assets, login, language ----------------------------------------------------
@router.get("/static/{name:path}")
async def static(name: str = Path(max_length=100)) -> Response:
    """The dashboard's own CSS/JS and the vendored libraries (an allowlist)."""
    media = _STATIC_TYPES.get(name)
    if media is None:
        return Response("Not found", status_code=404, headers=page_headers())
    data = resources.files(__package__).joinpath("static", *name.split("/")).read_bytes()
    headers = {**page_headers(), "Cache-Control": "public, max-age=3600"}
    return Response(data, media_type=media, headers=headers)


@router.get("")
@router.get("/")
async def home(request: Request) -> Response:
    return _redirect(request, "/ui/runs")


@router.get("/login")
async def login_page(
    request: Request,
    next: str | None = Query(default=None, max_length=500),
    why: str | None = Query(default=None, max_length=40),
) -> Response:
    lang = _lang(request)
    s = Session(None, "", "", lang, False, "")
    message = s.t(why) if why in ("login.expired", "login.invalid") else None
    ctx = _context(request, s, "login", next=safe_next(next, _root(request)), message=message)
    return render("login.html", ctx)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the pasted key exactly as an API call would; set the session cookie."""
    lang = _lang(request)
    s = Session(None, "", "", lang, False, "")
    try:
        form = await _form(request)
    except InputValidationError as bad:
        return _error_page(request, bad, 422)
    target = safe_next(form.get("next"), _root(request))
    if not same_origin(request.headers, request.url.scheme, request.headers.get("host")):
        denied = PermissionDeniedError(
            "The sign-in form was not sent from the dashboard's own page (Origin check).",
            fix="Open the dashboard at its own address to sign in.",
        )
        return _error_page(request, denied, 403)
    key = (form.get("key") or "").strip()
    gw = _gateway(request)
    principal = None
    if key and len(key) <= MAX_KEY_CHARS:
        try:
            principal = await gw.auth.authenticate(f"Bearer {key}")
        except AuthenticationError:
            principal = None
    if principal is None and gw.auth.enabled:
        ctx = _context(request, s, "login", next=target, message=s.t("login.invalid"))
        return render("login.html", ctx, status=401)
    resp = _redirect(request, target)
    if gw.auth.enabled:
        resp.set_cookie(**session_cookie(key, request.url.scheme == "https", _root(request)))
    return resp


@router.post("/logout")
@_page
async def logout(request: Request) -> Response:
    s = await _session(request)
    _check_post(request, s, await _form(request))
    resp = _redirect(request, "/ui/login")
    resp.delete_cookie(
        SESSION_COOKIE, path=f"{_root(request)}/ui", httponly=True, samesite="strict"
    )
    return resp


@router.get("/lang/{code}")
async def set_lang(
    request: Request,
    code: str = Path(max_length=5),
    next: str | None = Query(default=None, max_length=500),
) -> Response:
    """The language switch: a cookie (a year) that overrides Accept-Language."""
    root = _root(request)
    resp = _redirect(request, safe_next(next, root))
    if code in LANGS:
        resp.set_cookie(
            LANG_COOKIE,
            code,
            max_age=365 * 86400,
            path=f"{root}/ui",
            samesite="strict",
            httponly=True,
        )
    return resp


# -- runs ------------------------------------------------------------------------------
@router.get("/runs")
@_page
async def runs(
    request: Request,
    status: str | None = Query(default=None, max_length=16),
    workflow: str | None = Query(default=None, max_length=200),
    cursor: str | None = Query(default=None, max_length=300),
    limit: int = Query(default=50),
) -> Response:
    s = await _session(request)
    if status and status not in RUN_STATES:
        status = None
    limit = limit if limit in _data.PAGE_SIZES else 50
    gw = _gateway(request)
    page = await gw.run_blocking(_data.runs_page, s.tenant, status, workflow, cursor, limit)
    filters = {"status": status or "", "workflow": workflow or "", "limit": limit}
    next_url = None
    if page.next_cursor:
        q = {k: v for k, v in filters.items() if v} | {"cursor": page.next_cursor}
        next_url = f"{_root(request)}/ui/runs?" + urlencode(q)
    ctx = _context(
        request,
        s,
        "runs",
        rows=page.rows,
        filters=filters,
        states=sorted(RUN_STATES),
        page_sizes=_data.PAGE_SIZES,
        next_url=next_url,
        first_page=not cursor,
    )
    return render("runs.html", ctx)


_RUN_ID = Path(max_length=64)


async def _detail_context(request: Request, s: Session, run_id: str) -> dict[str, Any]:
    from lumos_ray.serve._tenant_runs import check_run_id

    check_run_id(run_id)
    detail = await _gateway(request).run_blocking(_data.run_detail, s.tenant, run_id)
    run = detail["run"]
    suspended = run.get("suspended") if run["status"] == "suspended" else None
    fields = form_fields((suspended or {}).get("schema")) if suspended else []
    return _context(
        request,
        s,
        "runs",
        run=run,
        steps=detail["steps"],
        events=detail["events"],
        last_seq=detail["last_seq"],
        suspended=suspended,
        fields=fields,
        max_value=MAX_VALUE_CHARS,
        input_json=_data.short_json(run.get("input")),
        output_json=_data.short_json(run.get("output")),
        error_json=_data.short_json(run.get("error")) if run.get("error") else None,
        live=run["status"] in ("pending", "running"),
        trace_id=_trace_id(run.get("trace")),
        origin=_origin(detail["events"]),
        checkpoints=detail["checkpoints"][: _data.MAX_CHECKPOINTS],
        checkpoints_total=len(detail["checkpoints"]),
        can_run=_may(s.principal, "run"),
    )


def _origin(events: list[dict[str, Any]]) -> dict[str, str] | None:
    """The run this one was replayed or forked from (its first event says so)."""
    if events and events[0].get("type") == "run_forked":
        data = events[0].get("data") or {}
        if isinstance(data.get("from_run"), str):
            return {"run": data["from_run"][:64], "step": str(data.get("from_step"))[:200]}
    return None


def _trace_id(carrier: Any) -> str | None:
    """The run's trace id, from the W3C ``traceparent`` it stored."""
    if isinstance(carrier, dict):
        parts = str(carrier.get("traceparent") or "").split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            return parts[1]
    return None


@router.get("/runs/{run_id}")
@_page
async def run_page(request: Request, run_id: str = _RUN_ID) -> Response:
    s = await _session(request)
    return render("run.html", await _detail_context(request, s, run_id))


@router.get("/runs/{run_id}/trace")
@_page
async def run_trace(request: Request, run_id: str = _RUN_ID) -> Response:
    """The run's trace as a span waterfall (when this gateway can read the spans)."""
    from lumos_ray.serve._dashboard._traces import waterfall
    from lumos_ray.serve._tenant_runs import check_run_id
    from lumos_ray.store import open_store

    s = await _session(request)
    check_run_id(run_id)
    gw = _gateway(request)
    run = await gw.run_blocking(open_store(tenant_id=s.tenant).get_run, run_id)
    trace_id = _trace_id(run.get("trace"))
    trace = await gw.run_blocking(waterfall, trace_id) if trace_id else None
    ctx = _context(request, s, "runs", run=run, trace_id=trace_id, trace=trace)
    return render("trace.html", ctx)


@router.get("/runs/{run_id}/steps")
@_page
async def run_steps(request: Request, run_id: str = _RUN_ID) -> Response:
    """The step timeline alone (htmx refreshes it while the run is live)."""
    s = await _session(request)
    return render("_steps.html", await _detail_context(request, s, run_id))


#: Longest one event stream stays open (the page then shows "stream ended").
MAX_STREAM_S = 900.0
#: How often a stream of a run waiting for input asks whether it moved on.
SUSPENDED_POLL_S = 1.0
_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@router.get("/runs/{run_id}/events")
@_page
async def run_events(
    request: Request,
    run_id: str = _RUN_ID,
    after: int = Query(0, ge=0, le=2**62),
) -> Response:
    """The run's events as server-sent events, read through the same runner call as
    the runs API's stream (``/v1/runs/{id}/events``, same data), but kept open
    while the run waits for input: a page of a suspended run shows its resumption,
    by whoever, as it happens. Ends when the run ends (an ``end`` event) or after
    MAX_STREAM_S; a client that leaves ends it at once."""
    import json
    import time

    from starlette.responses import StreamingResponse

    from lumos_ray.serve._tenant_runs import tenant_runs

    s = await _session(request)
    runs = tenant_runs(s.tenant)
    await runs.get(run_id)  # 404 before the stream starts
    last = request.headers.get("last-event-id") or ""
    start = int(last) if last.isdigit() and len(last) < 19 else after

    async def stream() -> Any:
        seq, status = start, ""
        deadline = time.monotonic() + MAX_STREAM_S
        while time.monotonic() < deadline:
            items, status = await runs.events(run_id, seq, 5.0)
            for ev in items:
                seq = ev["seq"]
                data = json.dumps(
                    {"seq": ev["seq"], "ts": ev["ts"], "type": ev["type"], **(ev.get("data") or {})}
                )
                # No `event:` field: the page's one onmessage handler gets every type
                # (the type is in the data, as in the runs API's stream).
                yield f"id: {ev['seq']}\ndata: {data}\n\n".encode()
            if not items:
                if status in _TERMINAL:
                    break
                yield b": waiting\n\n"  # a comment: keeps proxies from closing the stream
                if status == "suspended":  # the runner answers at once: poll each second
                    await asyncio.sleep(SUSPENDED_POLL_S)
        yield f"event: end\ndata: {json.dumps({'status': status})}\n\n".encode()

    headers = {**page_headers(), "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.post("/runs/{run_id}/resume")
@_page
async def resume(request: Request, run_id: str = _RUN_ID) -> Response:
    """Resume a suspended run with the typed form's value (developer role)."""
    from lumos_ray.serve._runs_api import ResumeRun
    from lumos_ray.serve._runs_api import resume as api_resume

    s = await _session(request)
    _require(s, "resume")
    form = await _form(request)
    _check_post(request, s, form)
    detail = await _gateway(request).run_blocking(_data.run_detail, s.tenant, run_id)
    suspended = detail["run"].get("suspended") or {}
    if detail["run"]["status"] != "suspended":
        raise InputValidationError(
            "This run is not waiting for input any more.", fix="Reload the run's page."
        )
    value = parse_form(suspended.get("schema"), form)
    await api_resume(run_id, request, ResumeRun(input=value))
    return _redirect(request, f"/ui/runs/{quote(run_id)}")


@router.post("/runs/{run_id}/cancel")
@_page
async def cancel(request: Request, run_id: str = _RUN_ID) -> Response:
    from lumos_ray.serve._runs_api import cancel as api_cancel

    s = await _session(request)
    _require(s, "cancel")
    _check_post(request, s, await _form(request))
    await api_cancel(run_id, request)
    return _redirect(request, f"/ui/runs/{quote(run_id)}")


# -- usage, threads, adapters ------------------------------------------------------------
@router.get("/usage")
@_page
async def usage(request: Request) -> Response:
    s = await _session(request)
    gw = _gateway(request)
    data: dict[str, Any] | None = None
    if gw.platform is not None and s.principal is not None:
        data = await gw.run_blocking(gw.platform.tenant_usage, s.principal, None)
    days = (data or {}).get("days", [])[-366:]
    chart = {
        "days": [d["day"] for d in days],
        "series": {
            m: [d.get(m) or 0 for d in days]
            for m in ("requests", "prompt_tokens", "completion_tokens", "embedding_inputs")
        },
        "labels": {
            m: s.t(f"usage.{m}")
            for m in ("requests", "prompt_tokens", "completion_tokens", "embedding_inputs")
        },
    }
    ctx = _context(request, s, "usage", usage=data, days=days, chart=chart)
    return render("usage.html", ctx)


@router.get("/threads")
@_page
async def threads(
    request: Request, agent: str | None = Query(default=None, max_length=200)
) -> Response:
    s = await _session(request)
    from lumos_ray.store import open_store

    store = open_store(tenant_id=s.tenant)
    rows = await _gateway(request).run_blocking(store.list_threads, agent or None, 1000)
    return render("threads.html", _context(request, s, "threads", rows=rows, agent=agent))


@router.get("/threads/{agent}/{thread_id:path}")
@_page
async def thread(
    request: Request, agent: str = Path(max_length=200), thread_id: str = Path(max_length=200)
) -> Response:
    s = await _session(request)
    from lumos_ray.store import open_store

    store = open_store(tenant_id=s.tenant)
    msgs = await _gateway(request).run_blocking(store.thread_messages, agent, thread_id)
    shown = msgs[-_data.MAX_MESSAGES :]
    ctx = _context(
        request,
        s,
        "threads",
        agent=agent,
        thread_id=thread_id,
        messages=[_message(m) for m in shown],
        hidden=len(msgs) - len(shown),
    )
    return render("thread.html", ctx)


def _message(m: Any) -> dict[str, Any]:
    if not isinstance(m, dict):
        return {"role": "?", "content": _data.short_json(m)}
    content = m.get("content")
    extra = {k: v for k, v in m.items() if k not in ("role", "content")}
    return {
        "role": str(m.get("role") or "?")[:40],
        "content": content if isinstance(content, str) else _data.short_json(content),
        "extra": _data.short_json(extra) if extra else None,
    }


@router.get("/jobs")
@_page
async def jobs(request: Request) -> Response:
    """The tenant's fine-tuning jobs (Ray Jobs API at LUMOS_JOBS_ADDRESS) and its
    federated runs (from the store: they need no Jobs API)."""
    from lumos_ray.serve._dashboard._federated import federated_runs
    from lumos_ray.serve._dashboard._jobs import jobs_address

    s = await _session(request)
    federated = await _gateway(request).run_blocking(federated_runs, s.tenant)
    address = jobs_address()
    rows: list[dict[str, Any]] = []
    problem = None
    if address is not None:
        from lumos_ray.finetune import list_jobs

        try:
            found = await _gateway(request).run_blocking(list_jobs, address, tenant=s.tenant)
            rows = [j.model_dump(mode="json") for j in found][-500:][::-1]
        except LumosError as err:
            problem = err
    ctx = _context(
        request, s, "jobs", rows=rows, address=address, problem=problem, federated=federated
    )
    return render("jobs.html", ctx)


@router.get("/jobs/{job_id}")
@_page
async def job(request: Request, job_id: str = Path(max_length=200)) -> Response:
    """One fine-tuning job: status, result, and its loss curve (uPlot)."""
    from lumos_ray.serve._dashboard._jobs import jobs_address, loss_curve

    s = await _session(request)
    address = jobs_address()
    if address is None:
        raise NotFoundError(
            "This gateway lists no jobs.",
            fix="Set LUMOS_JOBS_ADDRESS (the Ray dashboard URL) for the gateway.",
        )
    from lumos_ray.finetune import get_job, job_logs

    gw = _gateway(request)
    info = await gw.run_blocking(get_job, address, job_id, tenant=s.tenant)
    logs = await gw.run_blocking(job_logs, address, job_id, tenant=s.tenant)
    curve = loss_curve(logs)
    chart = {
        "steps": curve["step"],
        "series": {"loss": curve["loss"], "eval_loss": curve["eval_loss"]},
        "labels": {"loss": s.t("jobs.loss"), "eval_loss": s.t("jobs.eval_loss")},
    }
    ctx = _context(
        request,
        s,
        "jobs",
        job=info.model_dump(mode="json"),
        chart=chart,
        points=len(curve["step"]),
        result_json=_data.short_json(info.result) if info.result else None,
        error_json=_data.short_json(info.error) if info.error else None,
    )
    return render("job.html", ctx)


_MAX_QUERY = 1000


@router.get("/rag")
@_page
async def rag(
    request: Request,
    name: str | None = Query(default=None, max_length=100),
    q: str | None = Query(default=None, max_length=_MAX_QUERY),
    mode: str = Query(default="hybrid", max_length=20),
    k: int = Query(default=5, ge=1, le=20),
) -> Response:
    """The tenant's RAG collections, and a query box: each hit with its citation path
    through the knowledge graph. A query opens the collection's actors (its router and
    shards, as ``rag_search`` does) if they are not running."""
    from lumos_ray.rag import list_collections
    from lumos_ray.rag._config import SEARCH_MODES

    s = await _session(request)
    gw = _gateway(request)
    names = await gw.run_blocking(list_collections, s.tenant)
    mode = mode if mode in SEARCH_MODES else "hybrid"
    hits: list[dict[str, Any]] | None = None
    if name and q and q.strip():
        if name not in names:
            raise NotFoundError(
                f"No RAG collection {name[:100]!r} for your tenant.",
                fix="Pick one of the listed collections.",
            )
        from lumos_ray.rag import RagCollection

        col = await gw.run_blocking(RagCollection.open, name, tenant=s.tenant, create=False)
        found = await col.aquery(q.strip(), mode, k)
        hits = [h.model_dump(mode="json") for h in found]
    ctx = _context(
        request,
        s,
        "rag",
        names=names,
        name=name,
        q=q or "",
        mode=mode,
        modes=SEARCH_MODES,
        k=k,
        hits=hits,
        max_query=_MAX_QUERY,
    )
    return render("rag.html", ctx)


@router.get("/adapters")
@_page
async def adapters(request: Request) -> Response:
    s = await _session(request)
    gw = _gateway(request)
    records = await gw.run_blocking(gw.registry.list_for, s.tenant)
    rows = [r.model_dump(mode="json") for r in records]
    return render("adapters.html", _context(request, s, "adapters", rows=rows))
