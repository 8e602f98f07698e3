"""moladapt.config: fields added later keep stored runs' identities."""

from __future__ import annotations

import dataclasses

from moladapt.config import LATER_MODEL_FIELDS, ModelConfig, RunConfig, model_config_dict


def test_a_later_field_at_its_old_value_is_left_out_and_restored():
    for name, old in LATER_MODEL_FIELDS.items():
        assert getattr(ModelConfig(), name) == old  # the default reproduces the stored runs
        assert name not in RunConfig().to_dict()["model"]
        assert name not in model_config_dict(ModelConfig())
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()
    on = RunConfig(model=ModelConfig(fingerprint_bits=2048, fingerprint_counts=True))
    assert on.to_dict()["model"]["fingerprint_counts"] is True
    assert RunConfig.from_dict(on.to_dict()) == on
    assert list(on.to_dict()) == ["data", "model", "train"]
    assert {f.name for f in dataclasses.fields(ModelConfig)} - set(model_config_dict(ModelConfig())) \
        == set(LATER_MODEL_FIELDS)
