"""Foreground/background server process for `lumos serve up`.

With the embedded cluster the Serve app lives as long as the process that started
Ray, so `lumos serve up --detach` starts this module as a background process (its
own session, logs in ``$LUMOS_HOME/serve.log``, pid in ``$LUMOS_HOME/serve.pid``) and
`lumos serve down` stops it by that pid. Against a real cluster (``--address``) the app
outlives any client and no daemon is needed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

from lumos_ray._files import private_dir, write_private_text

__all__ = ["main", "pid_file", "run_foreground", "serve_at_normal_priority"]


def pid_file() -> Path:
    home = Path(os.environ.get("LUMOS_HOME") or ".lumos").expanduser().resolve()
    return home / "serve.pid"


#: Ray's raylet starts its workers at this niceness (its default is 15).
WORKER_NICENESS_ENV = "RAY_worker_niceness"


def serve_at_normal_priority() -> None:
    """Have the cluster this process starts run its workers (the gateway replica and
    the vLLM engine) at nice 0, unless the caller set ``RAY_worker_niceness`` itself.

    Why: Ray starts workers at nice 15 so drivers stay responsive, but on a serving
    node the workers ARE the service. At nice 15 the engine lost the CPU to its own
    clients' and the HTTP stack's processes: streaming gave 0.65-0.71x of standalone
    vLLM's tokens/s at 32-64 clients, and 0.93-0.94x at nice 0 (benchmarks/RESULTS.md,
    issue 18). Only an embedded cluster is affected: a cluster started elsewhere keeps
    the niceness its raylet was started with."""
    os.environ.setdefault(WORKER_NICENESS_ENV, "0")


def run_foreground(
    config: str | None, address: str | None, on_ready=None, port: int | None = None
) -> None:
    """Start the app, call ``on_ready(url)``, serve until SIGTERM/SIGINT, then stop."""
    from lumos_ray import runtime
    from lumos_ray.serve import start, stop
    from lumos_ray.serve._config import load_serve_config

    cfg = load_serve_config(config)
    if port is not None:
        cfg.gateway.port = port
    if address is None:
        serve_at_normal_priority()
    done = threading.Event()

    def on_signal() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())

    on_signal()
    try:
        url = start(cfg, address=address)
        # Again: starting Ray installs its own fatal-signal handler over ours, which
        # aborted the process on `lumos serve down` (SIGTERM) before the app was
        # deleted, so replicas never ran their graceful shutdown (engines stopping).
        on_signal()
        if on_ready:
            on_ready(url)
        done.wait()
    finally:
        try:
            stop(cfg.app_name)
        finally:
            runtime.shutdown()


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    config = args[0] if args and args[0] != "-" else None
    address = args[1] if len(args) > 1 and args[1] != "-" else None
    port = int(args[2]) if len(args) > 2 and args[2] != "-" else None
    pf = pid_file()
    private_dir(pf.parent)  # LUMOS_HOME: 0700
    write_private_text(pf, str(os.getpid()))

    def ready(url: str) -> None:
        print(json.dumps({"event": "ready", "url": url}), flush=True)

    try:
        run_foreground(config, address, ready, port)
    finally:
        try:
            if pf.read_text().strip() == str(os.getpid()):
                pf.unlink()
        except OSError:
            pass


if __name__ == "__main__":
    main()
