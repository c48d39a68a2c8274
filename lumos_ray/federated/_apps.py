"""What differs between the two apps (tabular, LoRA), behind one small interface.

The server loop and the ClientApp are app-agnostic: they ask an :class:`AppSpec` for
the initial arrays, for a site's local training/evaluation, for the server's held-out
evaluation and for what to do with the final arrays.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from lumos_ray.federated._config import FederationConfig

__all__ = ["AppSpec", "get_app_spec"]


class AppSpec:
    name = "base"

    def initial_arrays(self, cfg: FederationConfig) -> ArrayRecord:
        raise NotImplementedError

    def local_train(
        self,
        cfg: FederationConfig,
        arrays: ArrayRecord,
        site: dict[str, Any],
        *,
        epochs: int,
        proximal_mu: float,
        seed: int,
    ) -> tuple[ArrayRecord, dict[str, Any]]:
        raise NotImplementedError

    def local_evaluate(
        self, cfg: FederationConfig, arrays: ArrayRecord, site: dict[str, Any]
    ) -> dict[str, Any]:
        raise NotImplementedError

    def central_evaluate(self, cfg: FederationConfig, arrays: ArrayRecord) -> dict[str, float]:
        raise NotImplementedError

    def finalize(self, cfg: FederationConfig, arrays: ArrayRecord, run_name: str) -> dict:
        return {}


def _site_data(cfg: FederationConfig, site: dict[str, Any]):
    from lumos_ray.federated._data import load_site_file, site_partition

    if site.get("data-file"):
        return load_site_file(str(site["data-file"]))
    return site_partition(cfg.data, int(site["partition-id"]), int(site["num-partitions"]))


class TabularApp(AppSpec):
    name = "tabular"

    def _model(self, cfg: FederationConfig, arrays: ArrayRecord | None = None):
        from lumos_ray.federated._tabular import build_model

        model = build_model(cfg)
        if arrays is not None:
            model.load_state_dict(arrays.to_torch_state_dict())
        return model

    def initial_arrays(self, cfg: FederationConfig) -> ArrayRecord:
        return ArrayRecord(self._model(cfg).state_dict())

    def local_train(self, cfg, arrays, site, *, epochs, proximal_mu, seed):
        from lumos_ray.federated._tabular import train_local

        x, y, _, _ = _site_data(cfg, site)
        model = self._model(cfg, arrays)
        metrics = train_local(model, x, y, cfg, epochs=epochs, proximal_mu=proximal_mu, seed=seed)
        return ArrayRecord(model.state_dict()), metrics

    def local_evaluate(self, cfg, arrays, site):
        from lumos_ray.federated._tabular import evaluate

        _, _, xv, yv = _site_data(cfg, site)
        m = evaluate(self._model(cfg, arrays), xv, yv)
        return {"eval_loss": m["loss"], "eval_accuracy": m["accuracy"], "num-examples": len(yv)}

    def central_evaluate(self, cfg, arrays):
        from lumos_ray.federated._data import full_dataset
        from lumos_ray.federated._tabular import evaluate

        _, _, xt, yt = full_dataset(cfg.data)
        return evaluate(self._model(cfg, arrays), xt, yt)


class LoraApp(AppSpec):
    name = "lora"

    def initial_arrays(self, cfg: FederationConfig) -> ArrayRecord:
        from lumos_ray.federated import _lora

        model, _ = _lora.load_lora_model(cfg)
        # A fresh LoRA init (B = 0) from the fixed seed, not whatever a cached model holds.
        arrays = _lora.adapter_arrays(model)
        arrays = {k: (np.zeros_like(v) if "lora_B" in k else v) for k, v in arrays.items()}
        return _to_record(arrays)

    def _ready(self, cfg: FederationConfig, arrays: ArrayRecord) -> tuple[Any, Any]:
        from lumos_ray.federated import _lora

        model, tok = _lora.load_lora_model(cfg)
        _lora.set_adapter_arrays(model, _from_record(arrays))
        return model, tok

    def local_train(
        self,
        cfg: FederationConfig,
        arrays: ArrayRecord,
        site: dict[str, Any],
        *,
        epochs: int,
        proximal_mu: float,
        seed: int,
    ) -> tuple[ArrayRecord, dict[str, Any]]:
        # proximal_mu (FedProx) is not applied to adapters: the fine-tuning step has no
        # proximal term, and the server-side strategy still runs as configured.
        from lumos_ray.federated import _lora

        model, tok = self._ready(cfg, arrays)
        examples = _lora.site_examples(cfg, site)
        metrics = _lora.lora_train_local(model, tok, examples, cfg, epochs=epochs, seed=seed)
        return _to_record(_lora.adapter_arrays(model)), metrics

    def local_evaluate(
        self, cfg: FederationConfig, arrays: ArrayRecord, site: dict[str, Any]
    ) -> dict[str, Any]:
        from lumos_ray.federated import _lora

        model, tok = self._ready(cfg, arrays)
        examples = _lora.site_examples(cfg, site)[: max(1, cfg.batch_size)]
        m = _lora.lora_evaluate(model, tok, examples, cfg)
        return {"eval_loss": m["loss"], "num-examples": len(examples)}

    def central_evaluate(self, cfg: FederationConfig, arrays: ArrayRecord) -> dict[str, float]:
        from lumos_ray.federated import _lora

        model, tok = self._ready(cfg, arrays)
        return _lora.lora_evaluate(model, tok, _lora.heldout_examples(cfg), cfg)

    def finalize(self, cfg: FederationConfig, arrays: ArrayRecord, run_name: str) -> dict:
        from lumos_ray.federated import _lora

        out: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="lumos-fedlora-") as tmp:
            adir = os.path.join(tmp, "adapter")
            _lora.save_adapter(cfg, _from_record(arrays), adir)
            out["adapter_bytes"] = int(arrays.count_bytes())
            if cfg.lm.register_adapter:
                from lumos_ray.adapters import AdapterRegistry

                # A new version (<adapter_name>-v<N>), never over an entry: the
                # previous version may be what the gateway is serving right now.
                rec = AdapterRegistry().register_version(
                    cfg.lm.adapter_name,
                    adir,
                    base_model=_lora.base_model_dir(cfg.lm),
                    metadata={
                        "source": "federated",
                        "run": run_name,
                        "rounds": cfg.rounds,
                        "strategy": cfg.strategy.name,
                        # Same shape as a fine-tuning job's metadata: one LoraSpec.
                        "hyperparameters": {"lora": cfg.lora.model_dump()},
                    },
                )
                out["adapter"] = rec.name
                out["adapter_version"] = rec.version
                out["adapter_path"] = rec.path
        return out


def _to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    from flwr.app import Array

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _from_record(rec: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: rec[k].numpy() for k in rec.keys()}


def get_app_spec(name: str) -> AppSpec:
    return {"tabular": TabularApp, "lora": LoraApp}[name]()
