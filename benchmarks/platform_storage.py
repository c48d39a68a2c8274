"""How long one storage measurement of a tenant takes (``lumos_ray.platform``).

Builds a SQLite store in a temp dir with two tenants of the same size (``--runs`` runs
of ``--steps`` checkpoints and events each; ~3 kB per run and step) and ``--files``
snapshot files of 100 bytes in the measured tenant's RAG folder, then times the
database part (``lumos_ray.store.tenant_bytes``), the files part and one whole
measurement (``lumos_ray.platform._storage.measure``), ``--repeat`` times each.

    .venv/bin/python benchmarks/platform_storage.py [--runs 10000] [--steps 5] [--files 10000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from lumos_ray.platform._storage import _Budget, _dir_bytes, measure
from lumos_ray.store import CheckpointWrite, RunStore, open_database, tenant_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lumos-storage-bench-"))
    try:
        url = f"sqlite:///{work}/runs.db"
        acme = RunStore(url, "acme")
        t0 = time.perf_counter()
        for store in (acme, acme.for_tenant("other")):
            for i in range(args.runs):
                store.create_run(f"r{i}", "wf", "v1", {"x": "i" * 200}, status="succeeded")
            batch = [
                CheckpointWrite(
                    f"r{i}", f"{j}.s", {"out": "o" * 500}, [("step.finished", {"k": j})]
                )
                for i in range(args.runs)
                for j in range(args.steps)
            ]
            for k in range(0, len(batch), 5000):
                store.save_many(batch[k : k + 5000])
        folder = work / "home" / "rag" / "acme" / "docs" / "shard-0"
        folder.mkdir(parents=True)
        for i in range(args.files):
            (folder / f"s{i}").write_bytes(b"\0" * 100)
        print(f"built in {time.perf_counter() - t0:.1f} s")
        db = open_database(url)
        for _ in range(args.repeat):
            t = time.perf_counter()
            rows = tenant_bytes(db, "acme")
            t_db = time.perf_counter() - t
            t = time.perf_counter()
            _dir_bytes(work / "home" / "rag" / "acme", _Budget(200_000))
            t_files = time.perf_counter() - t
            t = time.perf_counter()
            report = measure(db, "acme", work / "home")
            t_all = time.perf_counter() - t
            print(
                f"db {t_db:.3f} s  files {t_files:.3f} s  whole {t_all:.3f} s  "
                f"total {report.total:,} B (store {sum(rows.values()):,} B)"
            )
        acme.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
