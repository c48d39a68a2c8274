"""The update guard in front of Flower's strategies: one test per way a site's reply
could break or own a round (keys, shapes, example counts, zero weight, overflow, metric
keys), each through Flower's real strategies (``flwr.serverapp.strategy``)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg

from lumos_ray.federated import FederationConfig, UpdateGuard, resolve_robust_method


def _reply(
    node: int,
    arrays: dict[str, np.ndarray],
    n: float = 10,
    message_type: str = "train",
    **metrics: float,
) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": n, "train_loss": 1.0, **metrics}),
        }
    )
    return _from(node, content, message_type)


def _from(node: int, content: RecordDict, message_type: str) -> Message:
    """A reply as the server receives it: from ``node`` to an instruction it was sent."""
    instruction = Message(content=RecordDict(), dst_node_id=node, message_type=message_type)
    return Message(content=content, reply_to=instruction)


def _guard(inner=None, glob: dict[str, np.ndarray] | None = None, **kw) -> UpdateGuard:
    guard = UpdateGuard(inner or FedAvg(), **kw)
    # What configure_train records: the global model the replies must match.
    guard._global = ArrayRecord(
        {k: Array(v) for k, v in (glob or {"w": np.zeros(4, np.float32)}).items()}
    )
    return guard


def _w(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full(4, value, dtype=np.float32)}


def test_reply_with_missing_or_extra_arrays_is_rejected_and_the_rest_aggregate():
    guard = _guard()
    extra = _reply(2, {**_w(5.0), "evil": np.ones(3, np.float32)})
    missing = _reply(3, {"v": np.ones(4, np.float32)})
    arrays, _ = guard.aggregate_train(1, [_reply(1, _w(1.0)), extra, missing])
    assert arrays is not None and np.allclose(arrays["w"].numpy(), 1.0)
    reasons = dict(guard.last_rejected)
    assert "unexpected 'evil'" in reasons[2]
    assert "missing 'w'" in reasons[3] and "unexpected 'v'" in reasons[3]


def test_reply_with_a_wrong_shape_is_rejected():
    guard = _guard()
    bad = _reply(2, {"w": np.ones(5, np.float32)})
    arrays, _ = guard.aggregate_train(1, [_reply(1, _w(1.0)), bad])
    assert arrays is not None and arrays["w"].numpy().shape == (4,)
    assert guard.last_rejected == [(2, "array 'w' has shape (5,), the global model's is (4,)")]


def test_reply_whose_array_cannot_be_decoded_is_rejected():
    guard = _guard()
    bad = _reply(2, _w(1.0))
    bad.content["arrays"]["w"] = Array(dtype="float32", shape=(4,), stype="bogus", data=b"xx")
    arrays, _ = guard.aggregate_train(1, [_reply(1, _w(1.0)), bad])
    assert arrays is not None and np.allclose(arrays["w"].numpy(), 1.0)
    assert [n for n, _ in guard.last_rejected] == [2]
    assert "could not be decoded" in guard.last_rejected[0][1]


def test_clip_is_never_skipped_when_array_counts_differ():
    # The old clip compared arrays by position and silently skipped a reply whose
    # array count differed, so an extra array let a huge update through unclipped.
    guard = _guard(max_update_norm=1.0)
    sneaky = _reply(1, {"w": np.full(4, 1e6, np.float32), "pad": np.zeros(1, np.float32)})
    arrays, _ = guard.aggregate_train(1, [sneaky])
    assert arrays is None
    assert guard.last_rejected and "array keys differ" in guard.last_rejected[0][1]
    assert guard.last_skipped is not None  # and the round says why it kept the model


def test_clip_aligns_arrays_by_key_not_by_position():
    glob = {"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)}
    guard = _guard(glob=glob, max_update_norm=1.0)
    # Same keys, other order: each array is clipped against its own global array.
    reply = _reply(1, {"b": np.full(3, 100.0, np.float32), "a": np.full(2, 100.0, np.float32)})
    arrays, _ = guard.aggregate_train(1, [reply])
    assert arrays is not None and guard.last_clipped == [1]
    norm = np.sqrt(sum(float((arrays[k].numpy() ** 2).sum()) for k in ("a", "b")))
    assert norm == pytest.approx(1.0, rel=1e-5)


def test_clip_of_huge_opposite_values_does_not_overflow_to_nan():
    # float32 deltas of +3e38 - (-3e38) overflow to Inf, and Inf * 0 is NaN.
    guard = _guard(glob={"w": np.full(4, -3e38, np.float32)}, max_update_norm=1.0)
    arrays, _ = guard.aggregate_train(1, [_reply(1, _w(3e38))])
    assert arrays is not None
    assert np.all(np.isfinite(arrays["w"].numpy()))
    assert guard.last_clipped == [1]


def test_a_site_claiming_1e15_examples_gets_a_bounded_weight():
    # Two honest sites (100 examples, arrays 0) and one claiming 1e15 (arrays 1):
    # unbounded, FedAvg gives the liar a weight of 1 - 2e-13. Default bound: 3 x median.
    guard = _guard()
    replies = [_reply(1, _w(0.0), 100), _reply(2, _w(0.0), 100), _reply(3, _w(1.0), 1e15)]
    arrays, metrics = guard.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    # Clipped to 3 x median (300): share 300 / 500.
    assert np.allclose(arrays["w"].numpy(), 300 / 500)
    assert guard.last_weight_clipped == [(3, 1e15, 300.0)]


def test_absolute_example_cap():
    guard = _guard(max_site_examples=150, max_weight_ratio=None)
    replies = [_reply(1, _w(0.0), 100), _reply(2, _w(1.0), 10_000)]
    arrays, _ = guard.aggregate_train(1, replies)
    assert arrays is not None and np.allclose(arrays["w"].numpy(), 150 / 250)


@pytest.mark.parametrize("bad", [-10, float("nan"), float("inf")])
def test_negative_or_non_finite_example_counts_are_rejected(bad):
    guard = _guard()
    arrays, _ = guard.aggregate_train(1, [_reply(1, _w(1.0), 10), _reply(2, _w(9.0), bad)])
    assert arrays is not None and np.allclose(arrays["w"].numpy(), 1.0)
    assert [n for n, _ in guard.last_rejected] == [2]
    assert "finite number >= 0" in guard.last_rejected[0][1]


def test_zero_total_weight_round_is_skipped_with_a_reason_not_a_crash():
    guard = _guard()
    arrays, metrics = guard.aggregate_train(1, [_reply(1, _w(1.0), 0), _reply(2, _w(2.0), 0)])
    assert (arrays, metrics) == (None, None)
    assert guard.last_skipped is not None and "num-examples = 0" in guard.last_skipped
    assert guard.last_rejected == []  # nobody misbehaved: the round just has no weight


def test_a_reply_reporting_zero_examples_takes_no_part_even_in_krum():
    # Krum aggregates only the reply it selects: had it picked the 0-example reply,
    # Flower's weighted average would divide by zero.
    from flwr.serverapp.strategy import Krum

    guard = _guard(Krum(num_malicious_nodes=0), max_weight_ratio=None)
    replies = [_reply(1, _w(1.0), 0), _reply(2, _w(1.0), 5), _reply(3, _w(1.0), 5)]
    arrays, _ = guard.aggregate_train(1, replies)
    assert arrays is not None and np.allclose(arrays["w"].numpy(), 1.0)
    assert guard.last_unweighted == [1] and guard.last_rejected == []


def test_non_finite_aggregate_is_dropped_and_the_global_model_kept():
    # Flower's trimmed mean sums in float32: two finite 3e38 updates overflow to Inf.
    guard = _guard(FedTrimmedAvg(beta=0.2))
    with np.errstate(over="ignore"):
        arrays, _ = guard.aggregate_train(1, [_reply(1, _w(3e38)), _reply(2, _w(3e38))])
    assert arrays is None
    assert guard.last_skipped is not None and "NaN/Inf" in guard.last_skipped


def test_nan_update_is_rejected_before_the_median():
    guard = _guard(FedMedian())
    nan = _reply(3, {"w": np.array([np.nan, 0, 0, 0], np.float32)})
    arrays, _ = guard.aggregate_train(1, [_reply(1, _w(1.0)), _reply(2, _w(3.0)), nan])
    assert arrays is not None and np.allclose(arrays["w"].numpy(), 2.0)
    assert [n for n, _ in guard.last_rejected] == [3]


def test_odd_metric_keys_reject_one_site_instead_of_failing_the_round():
    guard = _guard()
    odd = _reply(3, _w(7.0), 10, extra=1.0)
    arrays, _ = guard.aggregate_train(1, [_reply(1, _w(1.0)), _reply(2, _w(1.0)), odd])
    assert arrays is not None and np.allclose(arrays["w"].numpy(), 1.0)
    assert [n for n, _ in guard.last_rejected] == [3]
    assert "metric keys" in guard.last_rejected[0][1]


def _eval_reply(node: int, n: float, loss: float) -> Message:
    content = RecordDict({"metrics": MetricRecord({"num-examples": n, "eval_loss": loss})})
    return _from(node, content, "evaluate")


def test_evaluation_zero_weight_is_skipped_and_huge_counts_bounded():
    guard = _guard()
    assert guard.aggregate_evaluate(1, [_eval_reply(1, 0, 1.0), _eval_reply(2, 0, 2.0)]) is None
    assert guard.last_eval_skipped is not None
    replies = [_eval_reply(1, 10, 1.0), _eval_reply(2, 10, 1.0), _eval_reply(3, 1e15, 100.0)]
    metrics = guard.aggregate_evaluate(1, replies)
    assert metrics is not None
    assert metrics["eval_loss"] == pytest.approx((10 + 10 + 30 * 100) / 50)


def test_robust_aggregation_is_on_by_default_in_deployments_only():
    cfg = FederationConfig()
    assert cfg.robust.method == "auto"
    assert resolve_robust_method(cfg, "deployment") == ("median", None)
    assert resolve_robust_method(cfg, "simulation") == ("none", None)
    off = FederationConfig.model_validate({"robust": {"method": "none"}})
    method, warning = resolve_robust_method(off, "deployment")
    assert method == "none" and warning is not None and "one site can steer" in warning
    adam = FederationConfig.model_validate({"strategy": {"name": "fedadam"}})
    method, warning = resolve_robust_method(adam, "deployment")
    assert method == "none" and warning is not None and "fedadam" in warning


def test_deployment_strategy_is_flowers_median_behind_the_guard():
    from lumos_ray.federated import build_strategy

    guard = build_strategy(FederationConfig(), 3, mode="deployment")
    assert isinstance(guard, UpdateGuard) and isinstance(guard.inner, FedMedian)
    assert type(build_strategy(FederationConfig(), 3).inner) is FedAvg  # simulation


def test_client_drill_reports_the_configured_example_count():
    from flwr.app import ConfigRecord, Context

    from lumos_ray.federated import build_client_app
    from lumos_ray.federated._apps import get_app_spec

    cfg = FederationConfig.model_validate(
        {"attack": {"per_site": [{"site": 0, "kind": "examples", "examples": 1e15}]}}
    )
    arrays = get_app_spec("tabular").initial_arrays(cfg)
    content = RecordDict(
        {
            "arrays": arrays,
            "config": ConfigRecord(
                {"lumos-config": cfg.model_dump_json(), "server-round": 1, "local-epochs": 1}
            ),
        }
    )
    msg = Message(content=content, dst_node_id=7, message_type="train")
    ctx = Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": 0, "num-partitions": 2},
        state=RecordDict(),
        run_config={},
    )
    reply = build_client_app()(msg, ctx)
    assert reply.content["metrics"]["num-examples"] == 1e15


_GLOBAL = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def _hostile_reply():
    """Any reply a site could send: keys, shapes, values and counts chosen freely."""
    from hypothesis import strategies as st

    values = st.floats(allow_nan=True, allow_infinity=True, width=32)
    shapes = st.sampled_from([(2, 3), (3,), (3, 2), (1,), ()])
    arrays = st.dictionaries(
        st.sampled_from(["w", "b", "x"]),
        shapes.flatmap(
            lambda shape: st.lists(
                values, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
            ).map(lambda v, shape=shape: np.array(v, np.float32).reshape(shape))
        ),
        min_size=1,
    )
    counts = st.one_of(
        st.integers(-10, 10**15),
        st.floats(allow_nan=True, allow_infinity=True),
        st.just(0),
    )
    return st.tuples(arrays, counts, st.booleans())


def test_no_reply_crashes_a_round_or_makes_the_model_non_finite():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=150, deadline=None)
    @given(
        replies=st.lists(_hostile_reply(), min_size=1, max_size=5),
        inner=st.sampled_from(["fedavg", "median", "trimmed", "krum"]),
        clip=st.sampled_from([None, 1.0]),
    )
    def check(replies, inner, clip):
        from flwr.serverapp.strategy import Krum

        strategies = {
            "fedavg": FedAvg,
            "median": FedMedian,
            "trimmed": lambda: FedTrimmedAvg(beta=0.2),
            "krum": lambda: Krum(num_malicious_nodes=0),
        }
        guard = _guard(strategies[inner](), glob=_GLOBAL, max_update_norm=clip)
        msgs = [
            _reply(i + 1, arrays, n, **({"extra": 1.0} if odd else {}))
            for i, (arrays, n, odd) in enumerate(replies)
        ]
        with np.errstate(all="ignore"):
            arrays, _ = guard.aggregate_train(1, msgs)
        if arrays is None:
            assert guard.last_skipped  # a kept model always comes with a reason
            return
        assert set(arrays.keys()) == set(_GLOBAL)
        for k, v in _GLOBAL.items():
            got = arrays[k].numpy()
            assert got.shape == v.shape and np.all(np.isfinite(got))

    check()
