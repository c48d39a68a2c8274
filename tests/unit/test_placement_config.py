"""Placement from Python and YAML: validation with clear errors, and the Ray / Serve
options it turns into (checked against Ray's and Serve's own option validation).
Where the actors really land is checked on two nodes in
tests/integration/test_placement.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lumos_ray.config import load_yaml_model
from lumos_ray.errors import ConfigError
from lumos_ray.rag import CollectionConfig
from lumos_ray.runtime import Placement, merge_actor_options
from lumos_ray.serve._config import ServeConfig, ServedModelConfig

NODE = "ab" * 28


def test_actor_options_carry_resources_labels_and_node_affinity() -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    p = Placement(resources={"site_a": 0.01}, node_labels={"zone": "in(a,b)"}, node_id=NODE)
    opts = p.actor_options()
    assert opts["resources"] == {"site_a": 0.01}
    assert opts["label_selector"] == {"zone": "in(a,b)"}
    strategy = opts["scheduling_strategy"]
    assert isinstance(strategy, NodeAffinitySchedulingStrategy)
    assert (strategy.node_id, strategy.soft) == (NODE, False)
    assert Placement(strategy="spread").actor_options() == {"scheduling_strategy": "SPREAD"}
    assert Placement().actor_options() == {}


def test_placement_options_are_accepted_by_ray_actor_options() -> None:
    import ray

    @ray.remote
    class A:
        pass

    p = Placement(resources={"site_a": 0.5}, node_labels={"zone": "!b"}, strategy="spread")
    # .options() validates every option name and value without scheduling anything.
    A.options(**merge_actor_options({"num_cpus": 0, "resources": {"x": 1}}, p))
    merged = merge_actor_options({"num_cpus": 0, "resources": {"x": 1.0}}, p)
    assert merged["resources"] == {"x": 1.0, "site_a": 0.5}
    assert merge_actor_options({"num_cpus": 0}, None) == {"num_cpus": 0}


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"resources": {"CPU": 1}}, "not a custom resource"),
        ({"resources": {"site_a": 0}}, "must be > 0"),
        ({"node_labels": {"zone": "a b"}}, "not a label selector"),
        ({"node_labels": {"bad key!": "a"}}, "not a valid node label name"),
        ({"node_id": "node-1"}, "not a Ray node id"),
        ({"node_id": NODE, "strategy": "spread"}, "cannot be combined with spread"),
        ({"soft": True}, "soft applies to node_id"),
        ({"strategy": "pack"}, "strategy"),
        ({"max_per_node": 0}, "max_per_node"),
        ({"nodes": ["a"]}, "nodes"),
    ],
)
def test_bad_placement_is_refused_with_the_reason(fields: dict, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Placement(**fields)


def test_rag_collection_placement_loads_from_yaml(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        "name: docs\nnum_shards: 2\n"
        "placement: {resources: {site_a: 0.01}, node_labels: {zone: a}, strategy: spread}\n"
    )
    cfg = load_yaml_model(f, CollectionConfig)
    assert cfg.placement == Placement(
        resources={"site_a": 0.01}, node_labels={"zone": "a"}, strategy="spread"
    )
    # Stored with the collection (config.json) and read back unchanged.
    assert CollectionConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert CollectionConfig(name="old").placement is None  # older configs load as before
    f.write_text("name: docs\nplacement: {node_labels: {zone: 'a b'}}\n")
    with pytest.raises(ConfigError, match="placement"):
        load_yaml_model(f, CollectionConfig)


def test_llm_replica_placement_becomes_serve_options_serve_accepts(tmp_path: Path) -> None:
    from ray import serve

    from lumos_ray.serve._llm import llm_deployment_options

    f = tmp_path / "serve.yaml"
    f.write_text(
        "models:\n  - name: m\n    placement:\n"
        "      resources: {site_a: 0.01}\n      node_labels: {group: gpu}\n"
        "      max_per_node: 1\n"
    )
    model = load_yaml_model(f, ServeConfig).models[0]
    opts = llm_deployment_options(model, str(tmp_path), {})
    actor = opts["ray_actor_options"]
    assert actor["resources"] == {"site_a": 0.01}
    assert actor["label_selector"] == {"group": "gpu"}
    assert actor["num_cpus"] == 1  # the replica's own size is kept
    assert opts["max_replicas_per_node"] == 1

    class Replica:
        pass

    serve.deployment(Replica, **opts)  # Serve's own validation of the options

    pinned = ServedModelConfig(placement=Placement(node_id=NODE))
    actor = llm_deployment_options(pinned, str(tmp_path), {})["ray_actor_options"]
    assert actor["label_selector"] == {"ray.io/node-id": NODE}
    with pytest.raises(ValidationError, match="soft"):
        ServedModelConfig(placement=Placement(node_id=NODE, soft=True))
