"""Where Ray runs an actor: custom resources, node labels, one node, spread.

One config shape for every kind of actor the project starts (a RAG collection's
router and shards, an LLM deployment's replicas), loadable from YAML like the rest of
the config, turned into Ray's public options here, at the one seam to Ray core:

- ``resources``: custom resources a node offers (``ray start --resources
  '{"site_a": 1}'``, a KubeRay group's ``rayStartParams.resources``); the actor only
  runs on such nodes. Ask for a fraction (``0.01``) so many actors fit on one node.
- ``node_labels``: Ray's label selector (``ray start --labels zone=a``; a value may be
  ``!v``, ``in(a,b)`` or ``!in(a,b)``). A named node group is a label every node of
  the group carries (``group=gpu``).
- ``node_id``: one node (``lumos status`` lists them); ``soft`` lets Ray use another
  node when that one is gone or full.
- ``strategy``: ``default`` is Ray's hybrid policy (fill the local/busiest nodes up
  to about half their resources, then spread); to pack a group onto chosen nodes,
  select them with ``node_labels``/``node_id``/``resources``. ``spread`` places each
  actor on the least-loaded node.
- ``max_per_node``: Serve replicas only: at most this many replicas of one deployment
  on a node (Serve's ``max_replicas_per_node``), which spreads them across nodes.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["NODE_ID_LABEL", "Placement", "merge_actor_options"]

_NODE_ID = re.compile(r"^[0-9a-f]{56}$")
# Ray's label syntax: an optional DNS-style prefix and '/', then a name; values of up
# to 63 characters. The selector value may carry the operators '!', 'in()', '!in()'.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_SELECTOR = re.compile(rf"^!?({_LABEL_VALUE}|in\(\s*{_LABEL_VALUE}(\s*,\s*{_LABEL_VALUE})*\s*\))$")
#: Ray's label every node carries with its own id (Serve has no node-affinity option,
#: so a Serve replica is pinned to a node by this label).
NODE_ID_LABEL = "ray.io/node-id"


class Placement(BaseModel):
    """Where an actor runs (see the module docstring for each field)."""

    model_config = ConfigDict(extra="forbid")

    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom resources each actor requires, e.g. {site_a: 0.01}.",
    )
    node_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels the node must have (Ray label selector), e.g. {zone: a}.",
    )
    node_id: str | None = Field(default=None, description="Pin to this node (hex id).")
    soft: bool = Field(default=False, description="With node_id: another node if it is gone.")
    strategy: Literal["default", "spread"] = "default"
    max_per_node: int | None = Field(
        default=None, ge=1, le=100, description="Serve replicas only: at most N per node."
    )

    @field_validator("resources")
    @classmethod
    def _check_resources(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if name in ("CPU", "GPU", "memory"):
                raise ValueError(
                    f"{name!r} is not a custom resource: set num_cpus / num_gpus / memory "
                    "where the actor's size is configured"
                )
            if not amount > 0:
                raise ValueError(f"resource {name!r} must be > 0 (got {amount})")
        return v

    @field_validator("node_labels")
    @classmethod
    def _check_labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, sel in v.items():
            if not _LABEL_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid node label name")
            if not _SELECTOR.match(sel):
                raise ValueError(
                    f"node label {key!r}: {sel!r} is not a label selector (a value, "
                    "'!value', 'in(a,b)' or '!in(a,b)'; letters, digits, '-', '_', '.')"
                )
        return v

    @field_validator("node_id")
    @classmethod
    def _check_node_id(cls, v: str | None) -> str | None:
        if v is not None and not _NODE_ID.match(v):
            raise ValueError(f"{v!r} is not a Ray node id (56 hex digits, see `lumos status`)")
        return v

    @model_validator(mode="after")
    def _check_combination(self) -> Placement:
        if self.node_id and self.strategy == "spread":
            raise ValueError("node_id pins to one node; it cannot be combined with spread")
        if self.soft and not self.node_id:
            raise ValueError("soft applies to node_id; set node_id or drop soft")
        return self

    def actor_options(self) -> dict[str, Any]:
        """Options for ``ActorClass.options(...)`` (merged over the actor's own)."""
        opts: dict[str, Any] = {}
        if self.resources:
            opts["resources"] = dict(self.resources)
        if self.node_labels:
            opts["label_selector"] = dict(self.node_labels)
        if self.node_id:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                node_id=self.node_id, soft=self.soft
            )
        elif self.strategy == "spread":
            opts["scheduling_strategy"] = "SPREAD"
        return opts

    def serve_options(self) -> dict[str, Any]:
        """Options for ``serve.deployment(...)``: ``ray_actor_options`` entries (to
        merge into the deployment's own) and ``max_replicas_per_node``. Serve places
        replicas itself (spread by default) and has no node-affinity option, so a
        node is chosen by its ``ray.io/node-id`` label, and ``soft`` is refused."""
        if self.soft:
            from lumos_ray.errors import ConfigError

            raise ConfigError(
                "placement.soft is not available for Serve replicas (Serve has no "
                "node-affinity option; the node is chosen by its ray.io/node-id label).",
                fix="Drop soft, or select nodes by node_labels / resources instead.",
            )
        actor: dict[str, Any] = {}
        if self.resources:
            actor["resources"] = dict(self.resources)
        labels = dict(self.node_labels)
        if self.node_id:
            labels[NODE_ID_LABEL] = self.node_id
        if labels:
            actor["label_selector"] = labels
        out: dict[str, Any] = {"ray_actor_options": actor}
        if self.max_per_node is not None:
            out["max_replicas_per_node"] = self.max_per_node
        return out


def merge_actor_options(
    base: dict[str, Any], placement: Placement | None, member: int | None = None
) -> dict[str, Any]:
    """``base`` actor options with ``placement``'s on top; custom resources are added
    to the actor's own (a shard's ``{"site_a": 0.01}`` plus any it already asks for).

    ``member``: the actor is the member-th of a group created together (a collection's
    shards). With ``spread``, Ray's SPREAD decides each actor alone on a load snapshot
    that the group's other actors have not changed yet, so two shards could share a
    node; instead member i goes to the i-th alive node that fits, so N members land on
    N nodes when there are N. The affinity is hard: with ``soft=True`` Ray put both
    shards of a two-node test on one node (it falls back as soon as a node looks busy);
    a member whose node died is re-created by its owner, and this choice is made again
    over the nodes alive then.
    """
    if placement is None:
        return dict(base)
    extra = placement.actor_options()
    if member is not None and placement.strategy == "spread":
        nodes = _fitting_nodes(placement)
        if nodes:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            node = nodes[member % len(nodes)]
            extra["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
    merged = {**base, **extra}
    if "resources" in base and "resources" in extra:
        merged["resources"] = {**base["resources"], **extra["resources"]}
    return merged


def _fitting_nodes(placement: Placement) -> list[str]:
    """Ids of the alive nodes offering ``placement``'s custom resources and carrying its
    plain-valued labels (a selector with an operator is left to Ray), sorted."""
    import ray

    out = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        offered = node.get("Resources") or {}
        labels = node.get("Labels") or {}
        if any(name not in offered for name in placement.resources):
            continue
        if any(
            labels.get(key) != value
            for key, value in placement.node_labels.items()
            if not value.startswith(("!", "in("))
        ):
            continue
        out.append(str(node["NodeID"]))
    return sorted(out)
