"""The per-worker training loop that Ray Train's ``TorchTrainer`` runs.

Data parallelism is done by hand over the adapter only: after each accumulated step
the LoRA gradients (plus the step's loss and token counts) are flattened into ONE
buffer and all-reduced. Frozen base weights, including 4-bit QLoRA ones, are never
communicated; torch DDP would broadcast the whole module state at wrap time and
bucket per parameter, which buys nothing when only a few adapter tensors train.

Resume: the loop starts from the newest complete checkpoint in the run's own storage
directory (adapter, optimizer, scheduler, step), not from ``ray.train.get_checkpoint()``
alone: Ray registers a checkpoint only some time after the worker wrote it, so after
a kill Ray's latest can be one behind (see ``_checkpoints``). A killed job that is
submitted again (same name and storage path) continues at the step it last
checkpointed; the data order is a pure function of (seed, epoch), so the resumed run
sees the batches the killed one would have seen.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from pathlib import Path
from typing import Any

from lumos_ray.finetune._checkpoints import (
    checkpoint_step,
    complete_checkpoints,
    load_torch_state,
    remove_partial_checkpoints,
    write_checkpoint,
)
from lumos_ray.finetune._data import TokenizedExample, load_splits, tokenize_examples
from lumos_ray.finetune._model import load_base_model, load_tokenizer, wrap_with_lora
from lumos_ray.finetune._spec import FinetuneJobSpec, OptimizerSpec
from lumos_ray.finetune._telemetry import ProgressWriter, metrics_provider

__all__ = [
    "MicroBatches",
    "collate",
    "evaluate_loss",
    "make_optimizer",
    "optimizer_step",
    "train_epochs",
    "train_loop_per_worker",
]

STATE_FILE = "train_state.json"
ADAPTER_DIR = "adapter"


def collate(batch: list[TokenizedExample], pad_id: int) -> dict[str, Any]:
    """Right-pad to the longest example; padding is masked out of attention and loss."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _token_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Summed next-token loss over the unmasked labels, and how many there were."""
    import torch.nn.functional as F

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1, :].float()
    target = batch["labels"][:, 1:]
    loss_sum = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        target.reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    return loss_sum, int((target != -100).sum().item())


def evaluate_loss(
    model: Any, examples: list[TokenizedExample], pad_id: int, batch_size: int, device: Any
) -> tuple[float, int]:
    """(summed loss, target tokens) over ``examples``; callers reduce across workers."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = {
                k: v.to(device) for k, v in collate(examples[i : i + batch_size], pad_id).items()
            }
            s, n = _token_loss(model, batch)
            total += float(s)
            count += n
    if was_training:
        model.train()
    return total, count


def make_optimizer(params: list[Any], o: OptimizerSpec, total_steps: int) -> tuple[Any, Any]:
    """The optimizer and its learning-rate schedule (warmup, then constant/linear/cosine)."""
    import torch

    if o.name == "adamw":
        opt: Any = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay)

    def factor(step: int) -> float:
        if o.warmup_steps and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        span = max(1, total_steps - o.warmup_steps)
        frac = min(1.0, (step - o.warmup_steps) / span)
        if o.schedule == "linear":
            return max(0.0, 1.0 - frac)
        return 0.5 * (1.0 + math.cos(math.pi * frac))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> list[int]:
    """This worker's example indices for ``epoch``: same length on every worker, so
    every worker takes the same number of steps (the all-reduce needs that)."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    per_worker = n // world
    return order[rank * per_worker : (rank + 1) * per_worker]


class MicroBatches:
    """Micro-batch ``m`` of one worker's shard, as tensors on ``device``.

    Micro-batch m is position ``m % per_epoch`` of epoch ``m // per_epoch``, whose
    order is a pure function of (seed, epoch): a resumed job and a federated site's
    next round both see exactly the batches a straight run would have seen."""

    def __init__(
        self,
        examples: list[TokenizedExample],
        *,
        batch_size: int,
        seed: int,
        pad_id: int,
        device: Any,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.examples = examples
        self.batch_size = batch_size
        self.seed, self.rank, self.world = seed, rank, world
        self.pad_id, self.device = pad_id, device
        self.per_epoch = math.ceil((len(examples) // world) / batch_size)
        self._orders: dict[int, list[int]] = {}

    def __call__(self, m: int) -> dict[str, Any]:
        epoch, pos = divmod(m, self.per_epoch)
        if epoch not in self._orders:
            self._orders.clear()
            self._orders[epoch] = _epoch_order(
                len(self.examples), self.seed, epoch, self.rank, self.world
            )
        order = self._orders[epoch]
        bs = self.batch_size
        batch_ex = [self.examples[i] for i in order[pos * bs : (pos + 1) * bs]]
        return {k: v.to(self.device) for k, v in collate(batch_ex, self.pad_id).items()}


def optimizer_step(
    model: Any,
    params: list[Any],
    batches: list[dict[str, Any]],
    opt: Any,
    sched: Any,
    *,
    max_grad_norm: float | None,
    world: int = 1,
) -> tuple[float, float, float]:
    """THE fine-tuning step: accumulate the micro-batches' gradients, average them over
    the replicas, clip, step. Returns (summed loss, target tokens, input tokens) over
    all replicas.

    Every path that trains an adapter (a Ray Train worker, a federated site) runs this
    function, so "what one step does" has one definition. With ``world > 1`` the
    adapter gradients and the step's counters go through ONE flattened all-reduce."""
    import torch

    accum = len(batches)
    loss_sum, n_tok, n_in = 0.0, 0, 0
    for batch in batches:
        s, n = _token_loss(model, batch)
        # Normalise by this micro-batch's tokens; the all-reduce averages replicas.
        (s / max(n, 1) / accum).backward()
        loss_sum += float(s.detach())
        n_tok += n
        n_in += int(batch["attention_mask"].sum())
    if world > 1:
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat(
            [g.reshape(-1).float() for g in grads]
            + [
                torch.tensor(
                    [loss_sum, float(n_tok), float(n_in)],
                    dtype=torch.float32,
                    device=grads[0].device,
                )
            ]
        )
        dist.all_reduce(flat)
        flat /= world
        off = 0
        for p, g in zip(params, grads, strict=True):
            k = g.numel()
            p.grad = flat[off : off + k].view_as(p).to(p.dtype)
            off += k
        loss_all, tok_all, in_all = (flat[off:] * world).tolist()
    else:
        loss_all, tok_all, in_all = loss_sum, float(n_tok), float(n_in)
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss_all, tok_all, in_all


def train_epochs(
    model: Any,
    examples: list[TokenizedExample],
    *,
    optimizer: OptimizerSpec,
    batch_size: int,
    epochs: int,
    seed: int,
    pad_id: int,
    device: Any = "cpu",
    grad_accum_steps: int = 1,
) -> dict[str, float]:
    """Train ``model``'s trainable parameters for whole epochs over ``examples`` in this
    process, with the fine-tuning job's own batching and step (no Ray, no checkpoints).

    This is what a federated LoRA site runs each round: the same data order, loss
    masking, accumulation, clipping and schedule as a fine-tuning job, on one replica.
    A fresh optimizer per call, because a round starts from the server's aggregate."""
    if not examples:
        from lumos_ray.errors import DatasetError

        raise DatasetError("no training examples (all were empty or longer than seq_len)")
    batches = MicroBatches(examples, batch_size=batch_size, seed=seed, pad_id=pad_id, device=device)
    steps_per_epoch = max(1, batches.per_epoch // grad_accum_steps)
    total = epochs * steps_per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = make_optimizer(params, optimizer, total)
    model.train()
    loss_sum = tok_sum = in_sum = 0.0
    for step in range(total):
        micro = [batches(step * grad_accum_steps + j) for j in range(grad_accum_steps)]
        s, n, n_in = optimizer_step(
            model, params, micro, opt, sched, max_grad_norm=optimizer.max_grad_norm
        )
        loss_sum, tok_sum, in_sum = loss_sum + s, tok_sum + n, in_sum + n_in
    return {
        "train_loss": loss_sum / max(tok_sum, 1.0),
        "steps": float(total),
        "tokens": in_sum,
    }


def plan_steps(n_train: int, spec: FinetuneJobSpec, world: int) -> tuple[int, int]:
    """(micro-batches per epoch per worker, total optimizer steps)."""
    per_worker = n_train // world
    if per_worker < 1:
        from lumos_ray.errors import DatasetError

        raise DatasetError(
            f"{spec.dataset.path}: {n_train} training examples cannot feed {world} workers",
            fix="Add examples or lower scaling.num_workers.",
        )
    micro = math.ceil(per_worker / spec.training.batch_size)
    steps_per_epoch = max(1, micro // spec.training.grad_accum_steps)
    total = spec.training.max_steps or spec.training.epochs * steps_per_epoch
    return micro, total


def adapter_fingerprint(params: list[Any]) -> str:
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _resume_point(run_dir: Path, registered: Any | None) -> tuple[str | None, list[str]]:
    """(checkpoint directory to resume from or None, the complete checkpoints Ray never
    registered, oldest first).

    Resume from the newest complete checkpoint in the run directory, registered by Ray
    or not. Ray registers checkpoints in the order they were reported, so every
    complete one newer than Ray's latest is one it missed. A checkpoint Ray registered
    that is not one of ours (written by an older lumos) is complete by Ray's contract
    (it registers only after its copy finished) and competes with the step in its
    state file."""
    complete = complete_checkpoints(run_dir)
    reg_step, reg_path = -1, None
    if registered is not None:
        reg_path = str(registered.path)
        named = checkpoint_step(reg_path)
        if named is None:
            reg_step = int(json.loads((Path(reg_path) / STATE_FILE).read_text())["step"])
            if not complete or reg_step > complete[-1][0]:
                return reg_path, []
        else:
            reg_step = named
    missed = [str(d) for step, d in complete if step > reg_step]
    return (str(complete[-1][1]) if complete else None), missed


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import torch
    import torch.distributed as dist

    spec = FinetuneJobSpec.model_validate(config["spec"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    distributed = world > 1 and dist.is_available() and dist.is_initialized()
    if spec.scaling.use_gpu:
        import ray.train.torch as rtt

        device = rtt.get_device()
    else:
        device = torch.device("cpu")
    torch.manual_seed(spec.training.seed)
    random.seed(spec.training.seed)

    tok = load_tokenizer(spec.base_model)
    d = spec.dataset
    train_ex, val_ex, _fmt = load_splits(
        d.path,
        d.format,
        validation_path=d.validation_path,
        validation_fraction=d.validation_fraction,
        seed=spec.training.seed,
        max_examples=d.max_examples,
    )
    seq = spec.training.seq_len
    train_tok = tokenize_examples(train_ex, tok, seq)
    val_tok = tokenize_examples(val_ex, tok, seq)
    val_shard = val_tok[rank::world]
    pad_id = tok.pad_token_id

    model = wrap_with_lora(load_base_model(spec, str(device)), spec)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if distributed:
        for p in params:  # same start on every replica, whatever each one's RNG did
            dist.broadcast(p.data, src=0)

    micro_per_epoch, total_steps = plan_steps(len(train_tok), spec, world)
    opt, sched = make_optimizer(params, spec.optimizer, total_steps)
    accum = spec.training.grad_accum_steps
    bs = spec.training.batch_size

    def reduce(values: list[float]) -> list[float]:
        if not distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def held_out_loss() -> float:
        total, count = evaluate_loss(model, val_shard, pad_id, bs, device)
        total_all, count_all = reduce([total, float(count)])
        return total_all / max(count_all, 1.0)

    # Ray's experiment directory, exactly as Ray spells it: it only accepts a reported
    # checkpoint that lies under this path.
    run_dir = Path(ctx.get_storage().experiment_fs_path)
    # Rank 0 picks the checkpoint and every rank loads that one (a late rename seen by
    # one rank only must not split the replicas).
    choice: list[Any] = [None, []]
    if rank == 0 or not distributed:
        if rank == 0:
            for partial in remove_partial_checkpoints(run_dir):
                print(f"lumos: removed partial checkpoint {partial.name}", flush=True)
        choice = list(_resume_point(run_dir, ray.train.get_checkpoint()))
    if distributed:
        dist.broadcast_object_list(choice, src=0)
    resume_dir, missed = choice

    state: dict[str, Any] = {"step": 0, "tokens_seen": 0, "base_eval_loss": None}
    resumed_from = 0
    if resume_dir is not None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        c = Path(resume_dir)
        state = json.loads((c / STATE_FILE).read_text())
        set_peft_model_state_dict(
            model, load_file(str(c / ADAPTER_DIR / "adapter_model.safetensors"))
        )
        # weights_only: a tampered checkpoint is refused, never executed
        opt.load_state_dict(load_torch_state(c / "optimizer.pt"))
        sched.load_state_dict(load_torch_state(c / "scheduler.pt"))
        resumed_from = int(state["step"])
    for path in missed:
        # The kill came before Ray registered these: report them now, in order, so
        # Ray's latest is right and `checkpoint.keep` prunes them like the others.
        adopted = {"step": checkpoint_step(path), "final": False, "adopted": True}
        if rank == 0:
            ray.train.report(
                adopted,
                checkpoint=ray.train.Checkpoint.from_directory(path),
                checkpoint_upload_mode=ray.train.CheckpointUploadMode.NO_UPLOAD,
            )
        else:
            ray.train.report(adopted)

    meter_provider = metrics_provider(spec.output.metrics_exporter) if rank == 0 else None
    progress = (
        ProgressWriter(
            spec.run_dir / "progress.jsonl",
            spec.name,
            meter=meter_provider.get_meter("lumos_ray.finetune") if meter_provider else None,
        )
        if rank == 0
        else None
    )
    if state["base_eval_loss"] is None:
        # A fresh LoRA adapter is an exact no-op (B = 0), so this is the base model's loss.
        state["base_eval_loss"] = held_out_loss()
    if progress:
        progress.start(
            step=resumed_from,
            total_steps=total_steps,
            world_size=world,
            resumed_from_step=resumed_from,
            resumed_from_checkpoint=Path(resume_dir).name if resume_dir else None,
            train_examples=len(train_tok),
            eval_examples=len(val_tok),
            base_eval_loss=state["base_eval_loss"],
        )

    def save_checkpoint(metrics: dict[str, Any]) -> str | None:
        """Rank 0 writes the checkpoint complete (atomic rename) into the run directory,
        then reports that directory as is (NO_UPLOAD: no second, non-atomic copy);
        the other ranks report the metrics only. Returns the checkpoint's name."""
        if rank != 0:
            ray.train.report(metrics)
            return None

        def fill(t: Path) -> None:
            model.save_pretrained(str(t / ADAPTER_DIR))
            torch.save(opt.state_dict(), t / "optimizer.pt")
            torch.save(sched.state_dict(), t / "scheduler.pt")
            (t / STATE_FILE).write_text(json.dumps(state))

        path = write_checkpoint(run_dir, int(state["step"]), fill)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(path),
            checkpoint_upload_mode=ray.train.CheckpointUploadMode.NO_UPLOAD,
        )
        return path.name

    step = resumed_from
    eval_loss: float | None = None
    last_loss = float("nan")
    t_start = time.perf_counter()
    tokens_this_run = 0
    tokens_since_log = 0
    batches = MicroBatches(
        train_tok,
        batch_size=bs,
        seed=spec.training.seed,
        pad_id=pad_id,
        device=device,
        rank=rank,
        world=world,
    )
    ckpt_every = spec.checkpoint.every_steps
    eval_every = spec.training.eval_every_steps
    while step < total_steps:
        micro = [batches(step * accum + j) for j in range(accum)]
        loss_sum_all, n_tok_all, n_in_all = optimizer_step(
            model,
            params,
            micro,
            opt,
            sched,
            max_grad_norm=spec.optimizer.max_grad_norm,
            world=world if distributed else 1,
        )
        step += 1
        last_loss = loss_sum_all / max(n_tok_all, 1.0)
        tokens_this_run += int(n_in_all)
        tokens_since_log += int(n_in_all)
        state["step"] = step
        state["tokens_seen"] = int(state["tokens_seen"]) + int(n_in_all)
        elapsed = time.perf_counter() - t_start
        tps = tokens_this_run / elapsed if elapsed > 0 else 0.0
        eta = (total_steps - step) * elapsed / max(step - resumed_from, 1)
        if progress and (step % spec.training.log_every_steps == 0 or step == total_steps):
            progress.step(
                step=step,
                total_steps=total_steps,
                loss=last_loss,
                tokens=tokens_since_log,
                tokens_per_s=tps,
                eta_s=eta,
                lr=sched.get_last_lr()[0],
                epoch=(step * accum) // micro_per_epoch,
            )
            tokens_since_log = 0
        if eval_every and step % eval_every == 0 and step < total_steps:
            eval_loss = held_out_loss()
            if progress:
                progress.eval(step=step, eval_loss=eval_loss)
        if ckpt_every and step % ckpt_every == 0 and step < total_steps:
            name = save_checkpoint({"step": step, "loss": last_loss, "final": False})
            if progress:
                progress.event("checkpoint", step=step, checkpoint=name)

    elapsed = time.perf_counter() - t_start  # the loop only, not the final evaluation
    eval_loss = held_out_loss()
    fingerprint = adapter_fingerprint(params)
    if distributed:
        hashes: list[Any] = [None] * world
        dist.all_gather_object(hashes, fingerprint)
    else:
        hashes = [fingerprint]
    final = {
        "step": step,
        "total_steps": total_steps,
        "final": True,
        "loss": last_loss,
        "eval_loss": eval_loss,
        "base_eval_loss": state["base_eval_loss"],
        "resumed_from_step": resumed_from,
        "tokens_seen": state["tokens_seen"],
        "tokens_per_s": tokens_this_run / elapsed if elapsed > 0 and tokens_this_run else 0.0,
        "train_seconds": elapsed,
        "world_size": world,
        "replica_fingerprints": hashes,
        "replicas_in_sync": len(set(hashes)) == 1,
    }
    if progress:
        progress.eval(step=step, eval_loss=eval_loss)
    save_checkpoint(final)
    if progress:
        progress.event("done", **{k: v for k, v in final.items() if k != "replica_fingerprints"})
    if meter_provider is not None:
        meter_provider.shutdown()  # flushes the last values to the exporter
