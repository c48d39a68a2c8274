"""Peak memory of LoRA vs QLoRA (4-bit) training on one model, side by side.

A random-init Llama large enough for weights to dominate (default ~230M parameters,
about 0.93 GB in fp32) is written to a temp dir; then each mode loads it through the
job's own code path (``load_base_model`` + ``wrap_with_lora``) and trains a few steps,
in a fresh subprocess so peaks do not mix. On CPU the peak is the process's maximum
RSS minus its RSS just before the model load (Python, torch, transformers already
imported); on a CUDA device it is ``torch.cuda.max_memory_allocated``.

    .venv/bin/python benchmarks/finetune_memory.py [--hidden 1536 --layers 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {
    "lora-fp32": {"qlora": {"enabled": False}},
    "qlora-nf4": {"qlora": {"enabled": True, "quant_type": "nf4", "double_quant": True}},
    "qlora-fp4": {"qlora": {"enabled": True, "quant_type": "fp4", "double_quant": False}},
}


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def build_model(out: Path, hidden: int, layers: int, inter: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lumos_ray.models import tiny_model_path

    tiny = tiny_model_path()
    cfg = LlamaConfig(
        vocab_size=2048,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    for f in tiny.iterdir():  # the tokenizer of lumos-tiny (same 2048-token vocab)
        if f.name.startswith(("tokenizer", "special_tokens")):
            (out / f.name).write_bytes(f.read_bytes())
    return out


def run_mode(model_dir: str, mode: str, device: str, steps: int) -> dict[str, float]:
    import torch

    from lumos_ray.finetune import FinetuneJobSpec
    from lumos_ray.finetune._model import load_base_model, wrap_with_lora

    spec = FinetuneJobSpec.model_validate(
        {
            "name": f"mem-{mode}",
            "base_model": model_dir,
            "dataset": {"path": "unused.jsonl"},
            "lora": {
                "r": 16,
                "alpha": 32,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            },
            **MODES[mode],
        }
    )
    before = _rss_mib()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = wrap_with_lora(load_base_model(spec, device), spec)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(4, 2048, (4, 128), device=device)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    out = {
        "mode": mode,
        "seconds": time.perf_counter() - t0,
        "weights_mib": model.get_memory_footprint() / 2**20,
    }
    if device.startswith("cuda"):
        out["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["peak_mib"] = peak - before
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--intermediate", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--_child", nargs=2, metavar=("MODEL_DIR", "MODE"))
    args = ap.parse_args()
    if args._child:
        import torch  # noqa: F401  (imports counted before the baseline)
        import transformers  # noqa: F401

        print(json.dumps(run_mode(args._child[0], args._child[1], args.device, args.steps)))
        return

    with tempfile.TemporaryDirectory(prefix="lumos-ft-mem-") as tmp:
        model_dir = build_model(Path(tmp) / "model", args.hidden, args.layers, args.intermediate)
        rows = []
        for mode in MODES:
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--device",
                    args.device,
                    "--steps",
                    str(args.steps),
                    "--_child",
                    str(model_dir),
                    mode,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{mode} failed")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model_dir)
        n_params = (
            cfg.num_hidden_layers
            * (4 * cfg.hidden_size**2 + 3 * cfg.hidden_size * cfg.intermediate_size)
            + 2 * cfg.vocab_size * cfg.hidden_size
        )
    lora = rows[0]["peak_mib"]
    print(
        json.dumps(
            {"params": n_params, "device": args.device, "rows": rows, "load_avg": os.getloadavg()},
            indent=2,
        )
    )
    print(f"\nmodel ~{n_params / 1e6:.0f}M params on {args.device}")
    for r in rows:
        print(
            f"{r['mode']:10s} peak {r['peak_mib']:8.0f} MiB  ({r['peak_mib'] / lora:.2f}x of "
            f"LoRA)  weights {r['weights_mib']:7.0f} MiB  {r['seconds']:.1f}s"
        )


if __name__ == "__main__":
    main()
