"""Durable runs: a SIGKILLed driver's run resumes with `lumos runs resume`, and
every step's side effect happens exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

WF_MODULE = textwrap.dedent(
    """
    import os, time
    from pathlib import Path

    HERE = Path(__file__).parent

    def effect(n: int) -> int:
        if n == 3:
            # Step 3 blocks on its first execution until the test releases it.
            (HERE / "step3-started").write_text(str(os.getpid()))
            while not (HERE / "release").exists():
                time.sleep(0.1)
        with open(HERE / "effects.log", "a") as f:
            f.write(f"{n}\\n")
        return n
    """
)

DRIVER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, ".")
    from lumos_ray import runtime
    from lumos_ray import FunctionStep, Workflow, start_run, wait_run
    import wfmod

    wf = Workflow(
        name="durable",
        steps=[
            FunctionStep(id=f"s{n}", function=wfmod.effect, args={"n": n}) for n in (1, 2, 3, 4)
        ],
    )

    async def main():
        runtime.connect(num_cpus=4)
        run_id = await start_run(wf, {})
        open("run_id", "w").write(run_id)
        await wait_run(run_id)

    asyncio.run(main())
    """
)


_AGENTS = {"ray::DashboardAgent", "ray::RuntimeEnvAgent"}


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["LUMOS_HOME"] = str(home / ".lumos")
    env.pop("LUMOS_RAY_ADDRESS", None)
    env.pop("RAY_ADDRESS", None)
    return env


def _wait_for(path: Path, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"driver exited early ({proc.returncode}): {out[-3000:]}")
        if time.time() > deadline:
            raise AssertionError(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.2)


def test_sigkilled_driver_run_resumes_and_effects_happen_once(tmp_path):
    (tmp_path / "wfmod.py").write_text(WF_MODULE)
    (tmp_path / "driver.py").write_text(DRIVER)
    env = _env(tmp_path)
    driver = subprocess.Popen(
        [sys.executable, "driver.py"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for(tmp_path / "step3-started", 240, driver)
        family = [driver.pid] + [p.pid for p in psutil.Process(driver.pid).children(recursive=True)]
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
        # The embedded cluster shares the driver's fate; wait until it is really gone
        # (so no stray worker can finish step 3 behind our back).
        _, alive = psutil.wait_procs(
            [psutil.Process(p) for p in family if psutil.pid_exists(p)], timeout=60
        )
        # Ray's dashboard/runtime-env agents may outlive the raylet for a while; they
        # execute no work. Anything else alive (a worker, the raylet) would be a bug.
        agents = [p for p in alive if p.name() in _AGENTS]
        assert not set(alive) - set(agents), f"processes survived the driver: {alive}"
        for p in agents:
            p.kill()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)

    assert (tmp_path / "effects.log").read_text().split() == ["1", "2"]
    run_id = (tmp_path / "run_id").read_text()
    (tmp_path / "release").write_text("go")

    out = subprocess.run(
        [sys.executable, "-m", "lumos_ray", "runs", "resume", run_id, "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    import json

    result = json.loads(out.stdout[out.stdout.index("{") :])
    assert result["run"]["status"] == "succeeded"
    assert result["run"]["output"] == {"s1": 1, "s2": 2, "s3": 3, "s4": 4}
    # Finished steps were not executed again; the interrupted one ran to completion once.
    assert (tmp_path / "effects.log").read_text().split() == ["1", "2", "3", "4"]
    types = [e["type"] for e in result["events"]]
    assert "run_resumed" in types
