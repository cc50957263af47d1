"""scripts/checkpoint_variant.py: the same weights under other inference settings."""
import subprocess
import sys
from pathlib import Path

import torch

from dal.engine.checkpoint import load_checkpoint
from dal.engine.config import checkpoint_scoring
from dal.pretrained import default_checkpoint

SCRIPT = Path(__file__).parents[1] / "scripts" / "checkpoint_variant.py"


def _variant(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_a_variant_keeps_weights_thresholds_population_and_training_and_changes_only_what_it_sets(tmp_path):
    source = load_checkpoint(default_checkpoint())
    done = _variant(default_checkpoint(), tmp_path / "variant.safetensors", "--set", "scoring.disagreement=0.5")
    assert done.returncode == 0, done.stderr
    assert "give --recalibrate to fit them again" in done.stdout  # the population was fitted under other settings
    variant = load_checkpoint(tmp_path / "variant.safetensors")
    assert variant.config["scoring"]["disagreement"] == 0.5
    assert {k: v for k, v in variant.config["scoring"].items() if k != "disagreement"} == \
        {k: v for k, v in checkpoint_scoring(source.config).items() if k != "disagreement"}  # as calibrated
    assert variant.thresholds == source.thresholds and variant.training == source.training
    assert variant.metrics["variant_of"] == Path(default_checkpoint()).name
    for name, tensor in source.model.state_dict().items():
        assert torch.equal(variant.model.state_dict()[name], tensor)
    assert sorted(variant.population.maps) == sorted(source.population.maps)


def test_a_population_it_has_not_fitted_is_refused_without_recalibrate(tmp_path):
    plain = tmp_path / "plain.safetensors"
    assert _variant(default_checkpoint(), plain, "--set", "scoring.population=false").returncode == 0
    assert load_checkpoint(plain).population is None
    refused = _variant(plain, tmp_path / "again.safetensors", "--set", "scoring.population=true")
    assert refused.returncode == 2 and "give --recalibrate to fit them" in refused.stderr
    assert not (tmp_path / "again.safetensors").exists()
