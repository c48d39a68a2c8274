"""The one LoRA spec: what it accepts, the old spellings it still loads, and the
clear errors for the ones it does not. No Ray, no model weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lumos_ray.errors import ConfigError
from lumos_ray.federated import FederationConfig, load_federation_config
from lumos_ray.finetune import FinetuneJobSpec, LoraSpec, QuantizationSpec, load_job_spec
from lumos_ray.finetune._model import peft_config

JOB = {"name": "j", "base_model": "m", "dataset": {"path": "d.jsonl"}}


def test_fine_tuning_and_federation_share_one_lora_type() -> None:
    job = FinetuneJobSpec.model_validate({**JOB, "lora": {"r": 4, "bias": "lora_only"}})
    fed = FederationConfig.model_validate({"app": "lora", "lora": {"r": 4, "bias": "lora_only"}})
    assert type(job.lora) is type(fed.lora) is LoraSpec
    assert job.lora == fed.lora


def test_spec_becomes_the_peft_config() -> None:
    spec = LoraSpec(r=4, alpha=8, dropout=0.1, target_modules=["q_proj"], bias="all")
    cfg = peft_config(spec)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.bias) == (4, 8, 0.1, "all")
    assert set(cfg.target_modules) == {"q_proj"}


def test_rank_is_a_documented_alias_of_r() -> None:
    assert LoraSpec.model_validate({"rank": 3}).r == 3
    assert "rank" not in LoraSpec.model_validate({"rank": 3}).model_dump()
    with pytest.raises(ValidationError, match="rank is an old name for r"):
        LoraSpec.model_validate({"r": 3, "rank": 4})


def test_old_qlora_section_loads_as_lora_quantization() -> None:
    spec = FinetuneJobSpec.model_validate(
        {**JOB, "lora": {"r": 16}, "qlora": {"enabled": True, "quant_type": "fp4"}}
    )
    assert spec.lora.r == 16
    assert spec.lora.quantization == QuantizationSpec(bits=4, quant_type="fp4")
    off = FinetuneJobSpec.model_validate({**JOB, "qlora": {"enabled": False}})
    assert off.lora.quantization is None and "qlora" not in off.model_dump()
    with pytest.raises(ValidationError, match=r"keep lora\.quantization only"):
        FinetuneJobSpec.model_validate(
            {**JOB, "qlora": {"enabled": True}, "lora": {"quantization": {"bits": 8}}}
        )


def test_quantization_4_and_8_bit_and_4_bit_only_options() -> None:
    assert LoraSpec.model_validate({"quantization": {"bits": 8}}).quantization.bits == 8
    with pytest.raises(ValidationError, match="quant_type: only for 4-bit"):
        LoraSpec.model_validate({"quantization": {"bits": 8, "quant_type": "fp4"}})
    with pytest.raises(ValidationError, match="bits"):
        LoraSpec.model_validate({"quantization": {"bits": 2}})
    # A dumped spec loads back (the defaults of the 4-bit options are not "given").
    s = LoraSpec.model_validate({"quantization": {"bits": 8}})
    assert LoraSpec.model_validate_json(s.model_dump_json()) == s


def test_moved_federated_fields_fail_naming_the_new_field(tmp_path: Path) -> None:
    y = tmp_path / "fed.yaml"
    y.write_text("app: lora\nlora: {r: 4, samples_per_site: 8, max_length: 32}\n")
    with pytest.raises(ConfigError) as ei:
        load_federation_config(y)
    msg = ei.value.message
    assert "fed.yaml" in msg
    assert "lora.samples_per_site -> lm.samples_per_site" in msg
    assert "lora.max_length -> lm.seq_len" in msg
    y.write_text("app: lora\nlora: {r: 4}\nlm: {samples_per_site: 8, seq_len: 32}\n")
    cfg = load_federation_config(y)
    assert (cfg.lora.r, cfg.lm.samples_per_site, cfg.lm.seq_len) == (4, 8, 32)


def test_yaml_errors_are_config_errors_naming_the_field(tmp_path: Path) -> None:
    y = tmp_path / "job.yaml"
    y.write_text("name: j\nbase_model: m\ndataset: {path: d.jsonl}\nlora: {bias: some}\n")
    with pytest.raises(ConfigError, match=r"job.yaml: lora.bias: "):
        load_job_spec(y)
    y.write_text("name: j\nbase_model: m\ndataset: {path: d.jsonl}\nqlora: [1]\n")
    with pytest.raises(ConfigError, match=r"old spelling of lora\.quantization"):
        load_job_spec(y)
