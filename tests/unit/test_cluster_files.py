"""Every file in cluster/ parses and validates against its owner's schema: the Ray
cluster launcher YAMLs against Ray's own ``ray/autoscaler/ray-schema.json``, the
KubeRay manifests against KubeRay's CRD OpenAPI schemas (vendored, cluster/crds/).
The RayService embeds the Serve config the project's builder produces today, and the
RayJobs name real entry points with configs that load. No Ray cluster is started."""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import io
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
LAUNCHER = CLUSTER / "launcher"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayService": "ray.io_rayservices.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
}
IMAGE_ROOT = "/app"  # where cluster/Dockerfile puts the repository


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1 MB each


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.load_all(path.read_text(), Loader=_LOADER) if d is not None]


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields rejected (``kubectl --validate=strict``):
    Kubernetes prunes unknown fields silently, so a typo would otherwise pass."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


_VALIDATORS: dict[str, Any] = {}


def _crd_validator(kind: str) -> Any:
    if kind not in _VALIDATORS:
        crd = _docs(CLUSTER / "crds" / CRD_FILES[kind])[0]
        assert crd["spec"]["names"]["kind"] == kind
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = copy.deepcopy(v1["schema"]["openAPIV3Schema"])
        # metadata is Kubernetes' ObjectMeta (not described by the CRD).
        schema["properties"]["metadata"] = {"type": "object"}
        _VALIDATORS[kind] = jsonschema.Draft7Validator(_strict(schema))
    return _VALIDATORS[kind]


def _crd_errors(doc: dict[str, Any]) -> list[str]:
    validator = _crd_validator(doc["kind"])
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{p.name}#{i}", d)
        for p in sorted(KUBERAY.glob("*.yaml"))
        for i, d in enumerate(_docs(p))
        if d.get("apiVersion") == "ray.io/v1"
    ]


def _by_name(name: str) -> dict[str, Any]:
    (doc,) = _docs(KUBERAY / name)
    return doc


def _load_build_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "build_serve_config", CLUSTER / "build_serve_config.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_yaml_file_in_cluster_parses() -> None:
    files = sorted(p for p in CLUSTER.rglob("*.yaml") if "crds" not in p.parts)
    assert len(files) >= 7, files
    for path in files:
        assert _docs(path), f"{path} is empty"


@pytest.mark.parametrize("name", ["onprem.yaml", "aws.yaml"])
def test_launcher_yaml_validates_against_rays_cluster_schema(name: str) -> None:
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    doc = _docs(LAUNCHER / name)[0]
    jsonschema.validate(doc, schema)
    # The schema is loose about providers; a launcher YAML must still say where nodes are.
    assert doc["provider"]["type"] in {"local", "aws"}


def test_launcher_schema_rejects_a_misspelled_top_level_key() -> None:
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    doc = _docs(LAUNCHER / "onprem.yaml")[0]
    doc["setup_comands"] = doc.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        jsonschema.validate(doc, schema)


def test_kuberay_manifests_cover_cluster_service_and_jobs() -> None:
    kinds = sorted(d["kind"] for _, d in _manifests())
    assert kinds == ["RayCluster", "RayJob", "RayJob", "RayService"]


@pytest.mark.parametrize("label", [label for label, _ in _manifests()])
def test_kuberay_manifest_validates_against_the_crd_schema(label: str) -> None:
    doc = dict(_manifests())[label]
    assert _crd_errors(doc) == []


def test_crd_validation_rejects_an_unknown_field_and_a_wrong_type() -> None:
    doc = _by_name("raycluster.yaml")
    bad = copy.deepcopy(doc)
    bad["spec"]["workerGroupSpec"] = bad["spec"].pop("workerGroupSpecs")
    assert any("workerGroupSpec" in e for e in _crd_errors(bad))
    bad = copy.deepcopy(doc)
    bad["spec"]["workerGroupSpecs"][0]["replicas"] = "two"
    assert any("replicas" in e for e in _crd_errors(bad))


def test_rayservice_embeds_the_serve_config_the_builder_produces_today() -> None:
    script = _load_build_script()
    embedded = yaml.safe_load(_by_name("rayservice.yaml")["spec"]["serveConfigV2"])
    assert embedded == script.deploy_config()
    assert script.main(["--check"]) == 0


def test_rayservice_serve_config_is_valid_for_ray_serve_and_names_the_real_builder() -> None:
    from ray.serve.schema import ServeDeploySchema

    from lumos_ray.rayservice import app_builder
    from lumos_ray.serve import ServeConfig
    from lumos_ray.serve._config import load_serve_config

    embedded = yaml.safe_load(_by_name("rayservice.yaml")["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    (app,) = embedded["applications"]
    module, _, attr = app["import_path"].partition(":")
    assert getattr(importlib.import_module(module), attr) is app_builder
    cfg = ServeConfig.model_validate(app["args"])
    # The project's tiny-cpu app, changed only where a cluster must differ.
    base = load_serve_config(ROOT / "configs" / "serve" / "tiny-cpu.yaml")
    assert cfg.models == base.models and cfg.embeddings == base.embeddings
    assert (cfg.gateway.host, cfg.adapters_dir) == ("0.0.0.0", "/shared/lumos/adapters")
    assert embedded["http_options"]["port"] == cfg.gateway.port


def test_app_builder_refuses_args_that_are_not_a_serve_config() -> None:
    from lumos_ray.errors import ConfigError
    from lumos_ray.rayservice import app_builder

    with pytest.raises(ConfigError, match="gateway"):
        app_builder({"gateway": {"port": "not-a-port"}})


def _env_vars(job: dict[str, Any]) -> dict[str, str]:
    return dict(yaml.safe_load(job["spec"].get("runtimeEnvYAML") or "{}").get("env_vars") or {})


def test_finetune_rayjob_runs_the_job_entry_with_the_real_finetune_spec() -> None:
    from lumos_ray.finetune._spec import FinetuneJobSpec

    job = _by_name("rayjob-finetune.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"]
    assert importlib.util.find_spec(argv[2]) is not None, argv[2]
    assert argv[2] == "lumos_ray.runtime._job_entry"
    call = json.loads(_env_vars(job)["LUMOS_JOB_CALL"])
    module, _, attr = call["target"].partition(":")
    fn = getattr(importlib.import_module(module), attr)
    assert callable(fn) and set(call["kwargs"]) == {"spec"}
    spec = FinetuneJobSpec.model_validate(call["kwargs"]["spec"])
    # Same job as configs/finetune/lumos-tiny-lora.yaml, with image and volume paths.
    raw = yaml.safe_load((ROOT / "configs" / "finetune" / "lumos-tiny-lora.yaml").read_text())
    data_path = spec.dataset.path
    assert data_path is not None and data_path.startswith(IMAGE_ROOT + "/")
    assert (ROOT / data_path.removeprefix(IMAGE_ROOT + "/")).is_file()
    raw["dataset"]["path"] = data_path
    raw["output"]["storage_dir"] = "/shared/lumos/finetune"
    assert call["kwargs"]["spec"] == raw


def test_federated_rayjob_runs_the_simulation_driver_with_a_config_that_loads() -> None:
    from lumos_ray.federated import load_federation_config
    from lumos_ray.federated._simulate import main

    job = _by_name("rayjob-federated.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "lumos_ray.federated._job"]
    assert importlib.util.find_spec(argv[2]) is not None
    config = argv[3]
    assert config.startswith(IMAGE_ROOT + "/")
    cfg = load_federation_config(ROOT / config.removeprefix(IMAGE_ROOT + "/"))
    assert cfg.name == "tabular-fedavg"
    # Every option the manifest passes is one the driver's parser accepts.
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["--help"])
    for opt in [a for a in argv[4:] if a.startswith("--")]:
        assert opt in out.getvalue(), opt


def test_dockerfile_builds_from_the_pinned_ray_version() -> None:
    import ray

    text = (CLUSTER / "Dockerfile").read_text()
    assert f"rayproject/ray:{ray.__version__}-py3{sys.version_info.minor}" in text
    for _, doc in _manifests():
        spec = (
            doc["spec"].get("rayClusterSpec") or doc["spec"].get("rayClusterConfig") or doc["spec"]
        )
        assert spec["rayVersion"] == ray.__version__
