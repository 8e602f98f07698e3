"""moladapt.config: fields added later keep stored runs' identities; command-line values."""

from __future__ import annotations

import dataclasses

import pytest

from moladapt.config import (
    LATER_MODEL_FIELDS,
    ModelConfig,
    RunConfig,
    model_config_dict,
    parse_scalar,
)


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


@pytest.mark.parametrize(("text", "value"), [
    ("1e-4", 1e-4), ("-2.5E+3", -2500.0), (".5e1", 5.0), ("0.0001", 1e-4), ("16", 16), (" true ", True),
    ("[16, 128]", [16, 128]), ("mahalanobis", "mahalanobis"), ("e5", "e5"), ("1e", "1e"), ("", None),
])
def test_parse_scalar_reads_exponents_that_pyyaml_leaves_as_strings(text, value):
    assert parse_scalar(text) == value and type(parse_scalar(text)) is type(value)
