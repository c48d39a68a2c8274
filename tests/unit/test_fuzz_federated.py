"""Fuzz: generated site replies through the federated update guard and the strategy it
wraps (``build_strategy``: the configured Flower strategy behind ``UpdateGuard``), as
the server aggregates a round.

Properties per round: ``aggregate_train`` and ``aggregate_evaluate`` end within their
bound and never raise (a raise kills the federated run); a model the round returns has
exactly the global model's keys and shapes and only finite values, otherwise the round
is skipped with a reason. Replies mix honest updates with what a broken or hostile site
sends: NaN/Inf, float32-overflowing opposite weights, missing/extra/renamed arrays, other
shapes and dtypes, absurd or non-numeric example counts, odd metric keys, several or no
records, and error replies.

Strategies that need ``configure_train`` state beyond the global model (FedAdam, central
DP) are not driven here; every robust method and FedAvg/FedProx are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
from hypothesis import event, example, given
from hypothesis import strategies as st

from lumos_ray.federated import FederationConfig
from lumos_ray.federated._strategy import build_strategy
from tests.unit._fuzz import crash_in_disguise, fuzz_settings, within

BOUND_S = 20.0
EXAMPLES = 150

#: Hostile weights overflow on purpose (3e38 + 3e38); numpy's warnings are expected.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

GLOBAL = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}

FINITE = st.floats(-10, 10, width=32)
SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e30, -1e30, 0.0])
#: Mostly ordinary weights; a hostile value in about one array of three.
VALUES = st.one_of(*[FINITE] * 15, SPECIAL)


def _array(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    n = int(np.prod(shape)) if shape else 1
    return st.lists(VALUES, min_size=n, max_size=n).map(
        lambda v: np.asarray(v, dtype=np.float32).reshape(shape)
    )


def _arrays() -> st.SearchStrategy[dict[str, Any]]:
    honest = st.fixed_dictionaries({k: _array(v.shape) for k, v in GLOBAL.items()})
    odd_value = st.one_of(
        _array((4,)),
        _array(()),
        st.just(np.ones((3, 2), np.int64)),
        st.just(np.ones((3, 2), np.bool_)),
        st.just(np.ones((3, 2), np.float64) * 1e300),
        st.just(np.ones((3, 2), np.complex64)),
        st.just(np.zeros((0,), np.float32)),
    )
    mangled = st.tuples(
        honest,
        st.sampled_from(["drop", "extra", "replace", "rename"]),
        st.sampled_from(sorted(GLOBAL)),
        odd_value,
    ).map(_mangle)
    raw = st.tuples(honest, st.sampled_from(sorted(GLOBAL)), RAW_ARRAYS).map(
        lambda t: {**t[0], t[1]: t[2]}
    )
    return st.one_of(*[honest] * 6, mangled, raw)


#: Arrays as bytes a site could put on the wire: any header, any payload.
RAW_ARRAYS = st.builds(
    Array,
    dtype=st.sampled_from(["float32", "<f4", "float16", "int64", "object", "O", "|S4", "V8", "x"]),
    shape=st.sampled_from([(3, 2), (2,), (), (10**9,), (0,), (3, 2, 1)]),
    stype=st.sampled_from(["numpy.ndarray", "torch.Tensor", ""]),
    data=st.one_of(
        st.binary(max_size=64),
        st.just(b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"),
    ),
)


def _mangle(t: tuple[dict[str, np.ndarray], str, str, np.ndarray]) -> dict[str, np.ndarray]:
    arrays, how, key, value = t
    arrays = dict(arrays)
    if how == "drop":
        arrays.pop(key)
    elif how == "extra":
        arrays["evil"] = value
    elif how == "replace":
        arrays[key] = value
    else:
        arrays[key + "_"] = arrays.pop(key)
    return arrays


COUNT = st.one_of(
    *[st.integers(1, 1000)] * 4,
    st.sampled_from([0, -1, 10**15, 1e15, float("nan"), float("inf"), -float("inf"), 0.5, True]),
)
METRICS = st.one_of(
    *[st.fixed_dictionaries({"train_loss": st.floats(0, 10), "num-examples": COUNT})] * 4,
    st.fixed_dictionaries(
        {"train_loss": st.floats(-1e9, 1e9)},
        optional={"num-examples": COUNT, "accuracy": st.floats(0, 1), "odd": st.integers()},
    ),
)


def _reply(node: int, kind: str, arrays: dict[str, Any], metrics: dict[str, Any]) -> Any:
    """A reply as the server receives it (from ``node``, to an instruction it was sent)."""
    instruction = Message(content=RecordDict(), dst_node_id=node, message_type="train")
    if kind == "error":
        return Message(error=Error(code=1, reason="site failed"), reply_to=instruction)
    records: dict[str, Any] = {}
    try:
        arrays_record = ArrayRecord(
            {k: v if isinstance(v, Array) else Array(v) for k, v in arrays.items()}
        )
        metric_record = MetricRecord(metrics)
    except Exception:  # Flower's own records refuse the value: send an empty reply
        return Message(content=RecordDict(), reply_to=instruction)
    if kind in ("ok", "two-arrays"):
        records["arrays"] = arrays_record
    if kind == "two-arrays":
        records["more"] = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    if kind != "no-metrics":
        records["metrics"] = metric_record
    return Message(content=RecordDict(records), reply_to=instruction)


REPLIES = st.lists(
    st.tuples(
        st.sampled_from(["ok"] * 12 + ["error", "two-arrays", "no-arrays", "no-metrics"]),
        _arrays(),
        METRICS,
    ),
    min_size=0,
    max_size=6,
)


def _configs(methods: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        dict,
        method=st.sampled_from(methods),
        strategy=st.sampled_from(["fedavg", "fedprox"]),
        max_update_norm=st.none() | st.floats(0.01, 100),
        max_site_examples=st.none() | st.integers(1, 10**6),
        max_weight_ratio=st.none() | st.floats(1, 10),
        reject_non_finite=st.booleans(),
        mode=st.sampled_from(["simulation", "deployment"]),
    )


#: Found by this fuzz and fixed in the guard (a reply reporting 0 examples takes no
#: part, so Krum can no longer select it and divide by zero): a regression example now.
_HONEST = {k: v + 1 for k, v in GLOBAL.items()}
_KRUM_ZERO = (
    {
        "method": "krum",
        "strategy": "fedavg",
        "max_update_norm": None,
        "max_site_examples": None,
        "max_weight_ratio": None,
        "reject_non_finite": True,
        "mode": "deployment",
    },
    [("ok", _HONEST, {"train_loss": 0.0, "num-examples": n}) for n in (0, 5, 5)],
)


def _round(conf: dict[str, Any], replies: list[Any]) -> tuple[Any, Any, Any]:
    cfg = FederationConfig.model_validate(
        {
            "strategy": {"name": conf["strategy"]},
            "robust": {
                "method": conf["method"],
                "max_update_norm": conf["max_update_norm"],
                "max_site_examples": conf["max_site_examples"],
                "max_weight_ratio": conf["max_weight_ratio"],
                "reject_non_finite": conf["reject_non_finite"],
                "num_malicious": 1,
            },
            "min_train_sites": 1,
            "min_available_sites": 1,
        }
    )
    guard = build_strategy(cfg, num_sites_hint=len(replies) or 1, mode=conf["mode"])
    # What configure_train records for the round: the global model replies must match.
    guard._global = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    msgs = [_reply(i + 1, *r) for i, r in enumerate(replies)]
    arrays, metrics = guard.aggregate_train(1, msgs)
    evaluated = guard.aggregate_evaluate(1, [_reply(i + 1, *r) for i, r in enumerate(replies)])
    return arrays, metrics, evaluated


@fuzz_settings(max_examples=EXAMPLES, bound_s=BOUND_S)
@given(conf=_configs(["none", "median", "trimmed_mean", "auto"]), replies=REPLIES)
def test_fuzz_federated_round(conf: dict[str, Any], replies: list[Any]) -> None:
    _check_round(conf, replies)


@fuzz_settings(max_examples=EXAMPLES // 3, bound_s=BOUND_S)
@given(conf=_configs(["krum"]), replies=REPLIES)
@example(conf=_KRUM_ZERO[0], replies=_KRUM_ZERO[1])
def test_fuzz_federated_round_with_krum(conf: dict[str, Any], replies: list[Any]) -> None:
    _check_round(conf, replies)


def _check_round(conf: dict[str, Any], replies: list[Any]) -> None:
    try:
        arrays, _metrics, _evaluated = within(BOUND_S, lambda: _round(conf, replies))
    except AssertionError:
        raise
    except BaseException as exc:
        problem = crash_in_disguise(exc)
        if problem is not None:
            exc.add_note(f"fuzz: {conf}, {len(replies)} replies: {problem}")
            raise
        event(f"refused: {type(exc).__name__}")
        return
    event("aggregated" if arrays is not None else "round skipped")
    if arrays is not None:
        assert set(arrays.keys()) == set(GLOBAL)
        for key, want in GLOBAL.items():
            got = arrays[key].numpy()
            assert got.shape == want.shape, (key, got.shape)
            assert np.all(np.isfinite(got)), f"the round's model holds NaN/Inf in {key!r}"
