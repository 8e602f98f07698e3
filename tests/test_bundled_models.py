from pathlib import Path

import numpy as np
import pytest
import torch

from moladapt import bundled_models
from moladapt.bundled_models import model_card, resolve_init, sha256_file


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    monkeypatch.setattr(bundled_models, "bundled_dir", lambda: tmp_path)
    return tmp_path


def _encoder_file(path: Path, hidden_dim: int = 16, num_layers: int = 2) -> Path:
    from moladapt.data.featurize import get_featurizer
    from moladapt.models.encoders import build_encoder
    from moladapt.pretrain import save_pretrained_encoder

    feat = get_featurizer("basic")
    torch.manual_seed(12345)  # not the estimator's seed: its own init would differ
    enc = build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes, hidden_dim=hidden_dim,
                        num_layers=num_layers)
    save_pretrained_encoder(path, enc, feat, {"objective": "attribute_masking"})
    return path


def test_resolve_none_and_paths_unchanged(tmp_path):
    assert resolve_init(None) is None
    assert resolve_init("runs/x/encoder.pt") == "runs/x/encoder.pt"
    p = tmp_path / "encoder.pt"
    assert resolve_init(p) is p
    assert resolve_init("bundled_like_name.pt") == "bundled_like_name.pt"


def test_resolve_bundled_missing_names_file_and_command(bundled):
    with pytest.raises(FileNotFoundError) as err:
        resolve_init("bundled")
    msg = str(err.value)
    assert f"encoder_{bundled_models.DEFAULT_NAME}.pt" in msg
    assert "benchmarks/build_bundled_encoder.py" in msg
    with pytest.raises(FileNotFoundError, match="encoder_infomax.pt"):
        resolve_init("bundled:infomax")
    with pytest.raises(ValueError):
        resolve_init("bundled:")


def test_resolve_bundled_present(bundled):
    (bundled / "encoder_graphcl.pt").write_bytes(b"x")
    # the default is absent and exactly one encoder is bundled: "bundled" means that one
    assert resolve_init("bundled") == str(bundled / "encoder_graphcl.pt")
    assert resolve_init("bundled:graphcl") == str(bundled / "encoder_graphcl.pt")
    assert resolve_init(Path("bundled:graphcl")) == str(bundled / "encoder_graphcl.pt")  # via typer
    default = bundled / f"encoder_{bundled_models.DEFAULT_NAME}.pt"
    default.write_bytes(b"y")
    assert resolve_init("bundled") == str(default)
    assert resolve_init(Path("bundled")) == str(default)
    assert bundled_models.available() == sorted(["graphcl", bundled_models.DEFAULT_NAME])


def test_packaged_location_is_inside_the_package():
    assert bundled_models.encoder_path("x") == bundled_models.bundled_dir() / "encoder_x.pt"
    assert bundled_models.bundled_dir().name == "bundled"
    assert (bundled_models.bundled_dir() / "BBBP.csv").exists()


def test_model_card_has_every_field(tmp_path):
    pt = tmp_path / "encoder_attribute_masking.pt"
    pt.write_bytes(b"weights")
    info = {
        "name": "attribute_masking", "objectives": [(["attribute_masking"], 10)],
        "corpus": "moses_train.csv.gz", "corpus_size": 200000, "epochs": 10,
        "hparams": {"encoder": "gin", "hidden_dim": 300, "num_layers": 5, "batch_size": 256,
                    "lr": 0.001, "mask_rate": 0.15},
        "featurizer": "basic", "featurizer_version": 3,
        "command": "python benchmarks/build_bundled_encoder.py --objective attribute_masking",
        "wall_seconds": 7260.0, "sha256": sha256_file(pt), "file_size": 7_300_000,
        "downstream": "| objective | bbbp |\n|---|---|\n| none | 65.0 |\n| attribute_masking | 68.1 |",
    }
    card = model_card(info)
    for text in ("attribute_masking (10 epochs)", "moses_train.csv.gz", "200000", "| epochs | 10 |",
                 "hidden_dim", "| 300 |", "batch_size", "mask_rate", "`basic` version 3",
                 info["command"], "7260 s", "2.02 h", info["sha256"], "7.3 MB", "| none | 65.0 |",
                 "| attribute_masking | 68.1 |", "Measured downstream effect"):
        assert text in card, text
    assert "Not measured yet" in model_card({**info, "downstream": None})
    with pytest.raises(ValueError, match="sha256"):
        model_card({k: v for k, v in info.items() if k != "sha256"})


def test_sha256_file(tmp_path):
    import hashlib

    p = tmp_path / "f"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_estimator_starts_from_the_bundled_encoder(bundled, bbbp):
    from moladapt import MolPropertyModel
    from moladapt.pretrain import load_pretrained_encoder

    path = _encoder_file(bundled / f"encoder_{bundled_models.DEFAULT_NAME}.pt")
    model = MolPropertyModel(hidden_dim=16, num_layers=2, epochs=1, lr=0.0, batch_size=32,
                             init="bundled")
    model.fit(bbbp.smiles.tolist()[:64], bbbp.p_np.to_numpy()[:64])
    expected = dict(load_pretrained_encoder(path).named_parameters())  # lr 0: weights unchanged
    got = dict(model.model_.encoder.named_parameters())
    assert all(np.allclose(got[k].detach().numpy(), v.detach().numpy()) for k, v in expected.items())


def test_every_shipped_encoder_matches_its_card_and_loads():
    """What the package ships: the card's sha256 is the file's, the weights load (basic, 5×300)."""
    from moladapt.pretrain import load_pretrained_encoder

    shipped = bundled_models.available()
    assert bundled_models.DEFAULT_NAME in shipped  # `--init bundled` works out of the box
    for name in shipped:
        pt, card = bundled_models.encoder_path(name), bundled_models.card_path(name)
        assert card.exists(), f"{pt} has no model card"
        text = card.read_text()
        assert f"`{sha256_file(pt)}`" in text, f"{card}: sha256 does not match {pt}"
        assert pt.stat().st_size < 30e6
        assert "## Measured downstream effect" in text and "Not measured yet" not in text
        encoder = load_pretrained_encoder(pt)
        n_params = sum(p.numel() for p in encoder.parameters())
        assert n_params == 1_857_900, n_params  # GIN 5×300 of pretrain-gnns


def test_card_quotes_every_objective_with_the_bundled_one_in_bold(tmp_path, load_benchmark):
    build = load_benchmark("build_bundled_encoder.py")
    md = tmp_path / "pretraining.md"
    md.write_text("# title\n\nTest ROC-AUC (%) after 30 epochs.\n\n"
                  "| objective | bbbp | average |\n|---|---|---|\n| none | 60.0 ± 1.0 | 60.0 |\n"
                  "| attribute_masking | 66.0 ± 1.0 | 66.0 |\n| graphcl | 65.0 ± 2.0 | 65.0 |\n\n"
                  "| objective | pairs | mean Δ |\n|---|---|---|\n| attribute_masking | 3 | +6.00 |\n"
                  "| graphcl | 3 | +5.00 |\n")
    card = build.downstream_table(md, "attribute_masking")
    assert "| **attribute_masking** | **66.0 ± 1.0** | **66.0** |" in card
    assert "| graphcl | 65.0 ± 2.0 | 65.0 |" in card and "| none | 60.0 ± 1.0 | 60.0 |" in card
    assert "| **attribute_masking** | **3** | **+6.00** |" in card and "| graphcl | 3 | +5.00 |" in card
    assert "Test ROC-AUC (%) after 30 epochs." in card
    # an encoder the results do not mention: the whole file, nothing made up
    assert build.downstream_table(md, "infomax").startswith("From `pretraining.md`:\n\n# title")
