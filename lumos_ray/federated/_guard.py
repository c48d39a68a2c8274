"""lumos's update guard: what Flower's strategies assume about a reply, checked per site.

Flower's strategies trust each reply: FedAvg weights a site by the example count it
*reports* (one site claiming 1e15 examples owns the model), a zero total weight divides
by zero and kills the run, replies whose arrays differ in keys or shapes raise for the
whole round, and NaN/Inf spreads into every mean (and Krum's distances).
:class:`UpdateGuard` sits in front of the configured strategy and, per reply:

- rejects (with a logged reason, counted per round) a reply that is not one ArrayRecord
  plus one MetricRecord, whose array keys or shapes differ from the global model's,
  whose arrays are not numeric or hold NaN/Inf, whose reported example count is missing,
  negative or not finite, or whose metric keys differ from the other sites';
- bounds the example count a site reports: at most ``max_site_examples``, and at most
  ``max_weight_ratio`` times the median count of the round's accepted replies (so one
  site's share of the weight stays bounded while most sites are honest);
- clips each update's L2 norm (reply - global, in float64) to ``max_update_norm``;

then hands the rest to the wrapped strategy. A round whose accepted replies weigh
nothing in total, or whose aggregate is not finite or not the global model's shape, is
skipped: the global model stays as it was and the reason is logged and recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

__all__ = ["UpdateGuard"]

_MAX_NAMES = 5  # keys listed in a rejection reason


def _names(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - _MAX_NAMES} more)" if len(keys) > _MAX_NAMES else ""
    return ", ".join(repr(k) for k in keys[:_MAX_NAMES]) + more


def _number(value: Any) -> float | None:
    """A scalar count as float, or None when it is not one (bool, list, str...)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class UpdateGuard(Strategy):
    """Checks, bounds and clips site replies, then runs the inner Flower strategy."""

    def __init__(
        self,
        inner: Strategy,
        *,
        reject_non_finite: bool = True,
        max_update_norm: float | None = None,
        proximal_mu: float = 0.0,
        max_site_examples: float | None = None,
        max_weight_ratio: float | None = 3.0,
        weighted_by_key: str = "num-examples",
    ) -> None:
        self.inner = inner
        self.reject_non_finite = reject_non_finite
        self.max_update_norm = max_update_norm
        self.proximal_mu = proximal_mu
        self.max_site_examples = max_site_examples
        self.max_weight_ratio = max_weight_ratio
        self.weighted_by_key = weighted_by_key
        self._global: ArrayRecord | None = None
        #: (node id, reason) of replies rejected in the last aggregate_train call.
        self.last_rejected: list[tuple[int, str]] = []
        #: Node ids whose update norm was clipped in the last aggregate_train call.
        self.last_clipped: list[int] = []
        #: (node id, reported, used) example counts bounded in the last aggregate call.
        self.last_weight_clipped: list[tuple[int, float, float]] = []
        #: Node ids left out of the last aggregate_train because they reported 0 examples.
        self.last_unweighted: list[int] = []
        #: Why the last aggregate_train kept the global model unchanged (None: it didn't).
        self.last_skipped: str | None = None
        #: Why the last aggregate_evaluate returned no metrics (None: it returned some).
        self.last_eval_skipped: str | None = None

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays
        if self.proximal_mu > 0:
            # Robust aggregators don't send FedProx's term; lumos sends it for them.
            config["proximal-mu"] = self.proximal_mu
        return self.inner.configure_train(server_round, arrays, config, grid)

    # ---- per-reply checks -------------------------------------------------------

    def _reject(self, msg: Message, reason: str) -> None:
        node = msg.metadata.src_node_id
        self.last_rejected.append((node, reason))
        log(WARNING, "lumos guard: rejected reply of node %s: %s", node, reason)

    def _weight_reason(self, msg: Message) -> str | None:
        metrics = list(msg.content.metric_records.values())
        if len(metrics) != 1:
            return f"expected one MetricRecord in the reply, got {len(metrics)}"
        key = self.weighted_by_key
        if key not in metrics[0]:
            return f"the reply reports no {key!r} (its aggregation weight)"
        n = _number(metrics[0][key])
        if n is None or not np.isfinite(n) or n < 0:
            return f"{key!r} must be a finite number >= 0, got {metrics[0][key]!r}"
        return None

    def _arrays_reason(self, msg: Message) -> str | None:
        records = list(msg.content.array_records.values())
        if len(records) != 1:
            return f"expected one ArrayRecord in the reply, got {len(records)}"
        rec = records[0]
        glob = self._global
        if glob is not None:
            got, want = set(rec.keys()), set(glob.keys())
            if got != want:
                parts = []
                if want - got:
                    parts.append(f"missing {_names(want - got)}")
                if got - want:
                    parts.append(f"unexpected {_names(got - want)}")
                return (
                    f"array keys differ from the global model's ({len(got)} vs "
                    f"{len(want)} arrays): " + "; ".join(parts)
                )
        for key in rec.keys():
            if glob is not None:
                # From the Array's header, before its bytes are decoded.
                got_shape, want_shape = tuple(rec[key].shape), tuple(glob[key].shape)
                if got_shape != want_shape:
                    return (
                        f"array {key!r} has shape {got_shape}, the global model's is {want_shape}"
                    )
            try:
                arr = rec[key].numpy()
            except Exception as exc:  # any stype/bytes a site chose: its problem, not ours
                return f"array {key!r} could not be decoded as a numpy array: {exc}"
            if tuple(arr.shape) != tuple(rec[key].shape):
                return f"array {key!r} holds data of shape {arr.shape}, not its declared shape"
            if arr.dtype.kind not in "biuf":
                return f"array {key!r} has dtype {arr.dtype}, not a real number type"
            if self.reject_non_finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                return f"update contains NaN/Inf values (array {key!r})"
        return None

    def _consistent_metrics(self, msgs: list[Message]) -> list[Message]:
        """Keep the replies whose metric keys are those most sites send: Flower raises
        for the whole round when they differ, so one odd site would stop every round."""
        groups: dict[frozenset[str], list[Message]] = {}
        for m in msgs:
            keys = frozenset(next(iter(m.content.metric_records.values())).keys())
            groups.setdefault(keys, []).append(m)
        if len(groups) <= 1:
            return msgs
        best = max(groups, key=lambda k: len(groups[k]))  # first-seen wins ties
        for keys, members in groups.items():
            if keys != best:
                for m in members:
                    self._reject(
                        m,
                        f"metric keys {_names(keys)} differ from the other sites' {_names(best)}",
                    )
        return groups[best]

    def _bound_weights(self, msgs: list[Message]) -> float:
        """Clip each reported example count (absolute cap, then ``max_weight_ratio`` x
        the median); returns the total weight after clipping."""
        key = self.weighted_by_key
        records = [next(iter(m.content.metric_records.values())) for m in msgs]
        counts = [float(r[key]) for r in records]  # type: ignore[arg-type]
        if not counts:
            return 0.0
        cap = float("inf")
        if self.max_site_examples is not None:
            cap = float(self.max_site_examples)
        if self.max_weight_ratio is not None:
            cap = min(cap, self.max_weight_ratio * float(np.median(counts)))
        total = 0.0
        for msg, rec, n in zip(msgs, records, counts, strict=True):
            if n > cap:
                rec[key] = cap
                node = msg.metadata.src_node_id
                self.last_weight_clipped.append((node, n, cap))
                log(
                    WARNING,
                    "lumos guard: node %s reported %s=%g, bounded to %g",
                    node,
                    key,
                    n,
                    cap,
                )
                n = cap
            total += n
        return total

    def _weight(self, msg: Message) -> float:
        """The reply's (checked, bounded) example count."""
        rec = next(iter(msg.content.metric_records.values()))
        return float(rec[self.weighted_by_key])  # type: ignore[arg-type]

    def _clip(self, msg: Message) -> bool:
        """Clip the reply's update (reply - global) to ``max_update_norm``, key by key,
        in float64 (float32 deltas of huge opposite values overflow to Inf)."""
        assert self._global is not None and self.max_update_norm is not None
        glob = self._global
        (name, rec), *_ = msg.content.array_records.items()
        arrays = {k: rec[k].numpy() for k in rec.keys()}
        deltas = {
            k: a.astype(np.float64) - glob[k].numpy().astype(np.float64) for k, a in arrays.items()
        }
        norm = float(np.sqrt(sum(float(np.sum(d * d)) for d in deltas.values())))
        if norm <= self.max_update_norm:
            return False
        factor = self.max_update_norm / norm
        msg.content[name] = ArrayRecord(
            {
                k: Array((glob[k].numpy().astype(np.float64) + deltas[k] * factor).astype(a.dtype))
                for k, a in arrays.items()
            }
        )
        return True

    def _aggregate_reason(self, arrays: ArrayRecord) -> str | None:
        glob = self._global
        if glob is not None and set(arrays.keys()) != set(glob.keys()):
            return "the aggregate's array keys differ from the global model's"
        for key in arrays.keys():
            arr = arrays[key].numpy()
            if glob is not None and tuple(arr.shape) != tuple(glob[key].shape):
                return f"the aggregate's array {key!r} has shape {tuple(arr.shape)}"
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                return f"the aggregate holds NaN/Inf (array {key!r})"
        return None

    def _skip(self, server_round: int, reason: str) -> None:
        self.last_skipped = reason
        log(
            WARNING,
            "lumos guard: round %s skipped, the global model is kept: %s",
            server_round,
            reason,
        )

    # ---- Strategy hooks ---------------------------------------------------------

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.last_rejected = []
        self.last_clipped = []
        self.last_weight_clipped = []
        self.last_unweighted = []
        self.last_skipped = None
        errors: list[Message] = []
        checked: list[Message] = []
        for msg in replies:
            if msg.has_error():
                errors.append(msg)
                continue
            reason = self._arrays_reason(msg) or self._weight_reason(msg)
            if reason:
                self._reject(msg, reason)
                continue
            checked.append(msg)
        kept = self._consistent_metrics(checked)
        if not kept:
            self._skip(server_round, "no usable update (every reply failed or was rejected)")
            return None, None
        total = self._bound_weights(kept)
        if total <= 0:
            self._skip(
                server_round,
                f"the accepted replies report {self.weighted_by_key} = 0 in total "
                "(nothing to weight an average by)",
            )
            return None, None
        # A reply that weighs nothing takes no part: FedAvg would give it weight 0
        # anyway, and a strategy that aggregates only the replies it selects (Krum)
        # would divide by zero if it picked one.
        self.last_unweighted = [m.metadata.src_node_id for m in kept if self._weight(m) <= 0]
        if self.last_unweighted:
            log(
                WARNING,
                "lumos guard: round %s: node(s) %s report %s = 0 and are left out",
                server_round,
                self.last_unweighted,
                self.weighted_by_key,
            )
            kept = [m for m in kept if self._weight(m) > 0]
        if self.max_update_norm and self._global is not None:
            self.last_clipped = [m.metadata.src_node_id for m in kept if self._clip(m)]
        arrays, metrics = self.inner.aggregate_train(server_round, [*kept, *errors])
        if arrays is not None:
            reason = self._aggregate_reason(arrays)
            if reason:
                self._skip(server_round, reason)
                return None, metrics
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """The same weight checks and bounds as training (a 0 or 1e15 example count
        would divide by zero or own the averaged metrics)."""
        self.last_eval_skipped = None
        errors: list[Message] = []
        checked: list[Message] = []
        for msg in replies:
            if msg.has_error():
                errors.append(msg)
                continue
            reason = self._weight_reason(msg)
            if reason:
                self._reject(msg, f"evaluation: {reason}")
                continue
            checked.append(msg)
        kept = self._consistent_metrics(checked)
        if kept and self._bound_weights(kept) <= 0:
            self.last_eval_skipped = f"evaluation replies report {self.weighted_by_key} = 0"
            log(WARNING, "lumos guard: round %s: %s", server_round, self.last_eval_skipped)
            return None
        kept = [m for m in kept if self._weight(m) > 0]
        if not kept:
            self.last_eval_skipped = "no usable evaluation reply"
            return None
        return self.inner.aggregate_evaluate(server_round, [*kept, *errors])
