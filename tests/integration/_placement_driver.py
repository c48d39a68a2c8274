"""Driver of the placement test: connects to the two-node cluster at argv[1], starts
two RAG collections and an agent with placements, and prints one JSON line: the node
id each of their actors runs on (asked inside the actor, with Ray's ``__ray_call__``)
and the labels of every node.

- ``pinned``: two shards (and their router) on the node labelled ``zone=a``
  (``CollectionConfig.placement.node_labels``, as a YAML file would give it);
- ``spread``: two shards with ``strategy: spread``;
- an agent pinned by the ``site_a`` custom resource (``Agent.resources.resources``);
- an agent placed by node label (``Agent.placement.node_labels``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import lumos_ray as lr
from lumos_ray.actors.agent import Resources
from lumos_ray.rag import CollectionConfig, RagCollection
from lumos_ray.runtime import Placement, get_refs
from lumos_ray.testing import TestModel


def _node_of(handle: Any) -> str:
    """The id of the node the actor runs on, asked in the actor's own process."""
    return str(get_refs(handle.__ray_call__.remote(_here)))


def _here(_actor: Any) -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _collection(name: str, placement: Placement) -> dict[str, Any]:
    cfg = CollectionConfig(name=name, num_shards=2, placement=placement)
    coll = RagCollection.open(name, config=cfg, create=True)
    coll.stats()  # the router has created its shards and every one answers
    return {
        "shards": [_node_of(coll.shard_handle(i)) for i in range(2)],
        "router": _node_of(coll.router),
    }


def main(address: str) -> None:
    import ray  # after lumos_ray: it sets Ray's mode switches before Ray is imported

    lr.connect(address=address)
    nodes = {n["NodeID"]: n.get("Labels", {}) for n in ray.nodes() if n["Alive"]}
    out: dict[str, Any] = {"nodes": nodes}
    out["pinned"] = _collection("pinned", Placement(node_labels={"zone": "a"}))
    out["spread"] = _collection("spread", Placement(strategy="spread"))
    agent = lr.Agent(
        name="placed",
        model=TestModel(),
        resources=Resources(num_cpus=0, resources={"site_a": 0.01}),
    ).deploy()
    out["agent"] = _node_of(agent.actor("t"))
    labelled = lr.Agent(
        name="labelled",
        model=TestModel(),
        resources=Resources(num_cpus=0),
        placement=Placement(node_labels={"zone": "a"}),
    ).deploy()
    out["agent_by_label"] = _node_of(labelled.actor("t"))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
