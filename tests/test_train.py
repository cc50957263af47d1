"""`dal train` end to end on a tiny config: every model, resume after a kill, and bad input."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from dal.cli import main
from dal.engine import train as train_module
from dal.engine.checkpoint import load_checkpoint
from dal.engine.config import Config, ConfigError, load_config
from dal.engine.scoring import POPULATION_KEY, score_volume
from dal.engine.train import TrainingError, train
from dal.errors import ArgumentError
from dal.models import LossConfig, build_model

TINY = {
    "model": {"channels": 4, "levels": 2, "restoration_channels": 4, "code_channels": 4, "decoder_channels": 4,
              "ae_latent": 4},
    "data": {"train_volumes": 2, "val_contrasts": ["t1"], "val_lesions": ["tumour"], "val_healthy": 1},
    "train": {"batch_size": 4, "log_every": 1, "checkpoint_every": 2, "val_every": 4, "threads": 1},
    "preprocessing": {"spacing": 4.0, "shape": [40, 48, 40]},
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "dal-synthetic-cache")  # shared with test_ddp


def tiny_config(cache, **overrides) -> Config:
    data = json.loads(json.dumps(TINY))
    data["data"]["cache"] = cache
    config = Config.from_dict({**Config().to_dict(), **{k: {**Config().to_dict()[k], **v} for k, v in data.items()}})
    return config.replace(overrides)


def write_yaml(path: Path, cache, **sections) -> Path:
    data = json.loads(json.dumps(TINY))
    data["data"]["cache"] = cache
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("kind", ["dal", "ae", "dae"])
def test_every_model_trains_end_to_end_and_writes_a_loadable_run(tmp_path, cache, kind):
    config = tiny_config(cache, **{"model.kind": kind, "train.max_steps": 5})
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 5
    run = tmp_path / "run"
    assert load_config(run / "config.yaml") == config
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 5]
    assert all(0 <= r["ap"] <= 1 and "threshold_fpr_0.05" in r for r in records)
    best = load_checkpoint(run / "best.safetensors")
    assert best.model_kind == kind and set(best.thresholds) == {"fpr_0.01", "fpr_0.05", "fpr_0.01/t1", "fpr_0.05/t1"}
    assert best.thresholds["fpr_0.01"] >= best.thresholds["fpr_0.05"]
    assert best.thresholds["fpr_0.01/t1"] == best.thresholds["fpr_0.01"]  # every healthy validation scan is a T1
    assert best.preprocessing == config.preprocessing.to_dict()
    # What the weights cost, in both checkpoints: the best one is not resumable, so no state.
    assert set(best.training) == {"seconds", "steps", "hardware", "init"} and best.training["steps"] in (4, 5)
    assert best.training["seconds"] > 0 and len(best.training["hardware"]) == 1 and best.training["init"] is None
    last = load_checkpoint(run / "last.safetensors")
    assert last.training["state"]["step"] == 5 and last.training["steps"] == 5
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())


def test_the_intensity_baseline_trains_nothing_and_calibrates_its_thresholds(tmp_path, cache):
    config = tiny_config(cache, **{"model.kind": "intensity", "train.max_steps": 5})
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 0 and summary["best_step"] == 0
    best = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert best.model_kind == "intensity" and set(best.thresholds) == {"fpr_0.01", "fpr_0.05", "fpr_0.01/t1", "fpr_0.05/t1"}
    assert 0 < best.thresholds["fpr_0.05"] <= best.thresholds["fpr_0.01"]
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(best.model.pseudo_healthy(x)["phi"], torch.zeros_like(x))  # the score is the scan itself


def test_the_zscore_baseline_fits_a_population_per_contrast_in_mni_space_and_scores_z(tmp_path, cache):
    config = tiny_config(cache, **{"model.kind": "zscore", "data.synthetic_contrasts": ["t1", "t2"],
                                   "scoring.population_volumes": 2})
    assert not config.preprocessing.register
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 0
    assert load_config(tmp_path / "run" / "config.yaml").preprocessing.register  # voxels compared in MNI152 space
    best = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert best.model_kind == "zscore" and 0 < best.thresholds["fpr_0.05"] <= best.thresholds["fpr_0.01"]
    # One population per contrast, each from the healthy population stream's scans of it.
    assert best.model.config.contrasts == ("t1", "t2") and best.config["model"]["contrasts"] == ["t1", "t2"]
    mean, std = best.model.mean, best.model.std
    assert mean.shape == (2, *config.preprocessing.shape) and torch.isfinite(std).all()
    assert not torch.equal(mean[0], mean[1])  # a T2 is not compared with T1s
    brain = std[1] > 0  # the voxels where the T2 population has brain
    assert brain.float().mean() > 0.2
    # The score is the median of |x - mean| / std of the scan's contrast (outside that brain: 0).
    x = mean[1] + 3 * std[1]
    scored = score_volume(best.model, x, brain, config.preprocessing.spacing, median_mm=0, erode_mm=0, normalise=False,
                          contrast="t2")
    torch.testing.assert_close(scored["score"][brain], torch.full((int(brain.sum()),), 3.0))
    assert torch.equal(scored["phi"], mean[1])
    with pytest.raises(ArgumentError, match="contrast: this z-score holds healthy populations of t1, t2 scans"):
        score_volume(best.model, x, brain, config.preprocessing.spacing, contrast=None)


def test_validation_every_few_minutes_of_training(tmp_path, cache, monkeypatch):
    clock = {"now": 0.0}

    def perf_counter():  # every call is 10 s later: each step takes at least 10 s of "training"
        clock["now"] += 10.0
        return clock["now"]

    monkeypatch.setattr(train_module.time, "perf_counter", perf_counter)
    config = tiny_config(cache, **{"model.kind": "ae", "train.max_steps": 6, "train.val_minutes": 1.0})
    train(config, tmp_path / "run", progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 6 and 1 < len(steps) < 6  # by the clock, neither every step nor only at the end
    with pytest.raises(ConfigError, match="train.val_minutes: expected a positive number"):
        config.replace({"train.val_minutes": 0})


@pytest.mark.parametrize("name, changed", [
    ("ablation-no-restoration.yaml", {"model": {"restoration": False}}),
    ("fine-tune.yaml", {"train": {"lr": 0.0005}}),
    ("fine-tune-no-restoration.yaml", {"train": {"lr": 0.0005}, "model": {"restoration": False}}),
    ("ablation-no-onehot.yaml", {"model": {"onehot": False}}),
    ("ablation-no-anomalies.yaml", {"model": {"anomaly_probability": 0.0}}),
    ("auxiliary-half.yaml", {"model": {"auxiliary_fraction": 0.5}}),
    ("t1-only.yaml", {"data": {"synthetic_contrasts": ["t1"], "val_contrasts": ["t1"]}}),
    ("zscore.yaml", {"model": {"kind": "zscore"}, "preprocessing": {"register": True, "spacing": 1.0,
                                                                    "shape": [192, 224, 192]}}),
])
def test_the_shipped_experiment_configs_change_only_what_they_say(name, changed):
    config = load_config(Path(__file__).parents[1] / "configs" / name).to_dict()
    default = Config().to_dict()
    for section, values in changed.items():
        default[section].update(values)
    assert config == default


def _weights(path):
    return load_checkpoint(path).model.state_dict()


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, cache, monkeypatch):
    # amp off: "auto" times a step at the start of each run, and the two runs could choose differently.
    config = tiny_config(cache, **{"model.kind": "dal", "train.max_steps": 7, "train.val_every": 0,
                                   "model.gumbel": 0.5, "train.amp": "off"})
    train(config, tmp_path / "whole", progress=False)

    calls = {"n": 0}
    collate = train_module._collate

    def killed_at_step_6(items, device):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("killed")
        return collate(items, device)

    monkeypatch.setattr(train_module, "_collate", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed", progress=False)
    monkeypatch.setattr(train_module, "_collate", collate)
    at_kill = load_checkpoint(tmp_path / "killed" / "last.safetensors")
    assert at_kill.training["state"]["step"] == 4
    summary = train(config, tmp_path / "killed", resume=True, progress=False)
    assert summary["steps"] == 7
    record = load_checkpoint(tmp_path / "killed" / "last.safetensors").training
    assert record["steps"] == 7 and record["seconds"] > at_kill.training["seconds"]  # summed over the legs
    assert record["hardware"] == at_kill.training["hardware"]  # one machine, named once
    whole, resumed = _weights(tmp_path / "whole" / "last.safetensors"), _weights(tmp_path / "killed" / "last.safetensors")
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], rtol=1e-5, atol=1e-6, msg=name)
    # The steps after the checkpoint really change the weights: the comparison can fail.
    early = at_kill.model.state_dict()
    assert any(not torch.allclose(early[n].float(), whole[n].float()) for n in whole if whole[n].is_floating_point())


def test_amp_auto_times_a_step_once_per_run_and_a_resumed_run_keeps_the_choice(tmp_path, cache, monkeypatch):
    timed = []
    answers = iter([(True, {"off": 2.0, "bf16": 1.0}), (False, {"off": 1.0, "bf16": 2.0})])

    def bf16_step_is_faster(model, batch):
        timed.append(batch["view1"].shape[0])
        return next(answers)

    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(train_module, "bf16_step_is_faster", bf16_step_is_faster)
    config = tiny_config(cache, **{"model.kind": "dae", "train.max_steps": 2})

    def chosen(run):
        return load_checkpoint(tmp_path / run / "last.safetensors").training["state"]["amp"]

    train(config, tmp_path / "run", progress=False)
    assert timed == [4] and chosen("run") == "bf16"  # timed on one batch of the run
    train(config.replace({"train.max_steps": 4}), tmp_path / "run", resume=True, progress=False)
    assert timed == [4] and chosen("run") == "bf16"  # resumed: not timed again, the same precision
    train(config.replace({"train.amp": "off"}), tmp_path / "off", progress=False)
    assert timed == [4] and chosen("off") == "off"   # asked: no timing
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    train(config, tmp_path / "no-bf16", progress=False)
    assert timed == [4] and chosen("no-bf16") == "off"


def test_timing_a_step_each_way_leaves_the_model_and_the_generator_as_they_were(cache):
    torch.manual_seed(0)
    model = build_model(tiny_config(cache).model, LossConfig())
    before = {name: value.clone() for name, value in model.state_dict().items()}
    image = torch.rand(4, 1, 32, 40)
    generator = torch.get_rng_state()
    faster, seconds = train_module.bf16_step_is_faster(model, {"view1": image, "view2": image, "image": image})
    assert isinstance(faster, bool) and seconds["off"] > 0 and seconds["bf16"] > 0
    assert faster == (seconds["bf16"] < seconds["off"])
    assert torch.equal(torch.get_rng_state(), generator)
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_init_starts_from_a_checkpoint_and_records_its_lineage(tmp_path, cache, capsys):
    parent_config = tiny_config(cache, **{"model.kind": "dal", "train.max_steps": 3})
    train(parent_config, tmp_path / "parent", progress=True)
    assert "dal train: step 2/3: loss" in capsys.readouterr().out  # no terminal: a line per checkpoint, no bar
    parent = load_checkpoint(tmp_path / "parent" / "best.safetensors")
    child_config = parent_config.replace({"train.max_steps": 0, "train.init": str(tmp_path / "parent" / "best.safetensors"),
                                          "train.seed": 5})
    train(child_config, tmp_path / "child", progress=False)
    assert "starting from the weights of" in capsys.readouterr().out
    child = load_checkpoint(tmp_path / "child" / "best.safetensors")
    for name, tensor in parent.model.state_dict().items():
        torch.testing.assert_close(child.model.state_dict()[name], tensor, msg=name)  # no step: the parent's weights
    init = child.training["init"]
    assert init["checkpoint"] == "best.safetensors" and init["training"]["steps"] == parent.training["steps"]
    with pytest.raises(TrainingError, match="train.init .*a dal checkpoint; this run trains ae"):
        train(child_config.replace({"model.kind": "ae"}), tmp_path / "wrong", progress=False)


def test_cli_trains_with_flags_over_the_yaml(tmp_path, cache):
    path = write_yaml(tmp_path / "tiny.yaml", cache)
    result = CliRunner().invoke(main, ["train", "--config", str(path), "--out", str(tmp_path / "run"),
                                       "--model", "ae", "--max-steps", "2", "--seed", "3", "--threads", "2",
                                       "--val-minutes", "5", "--amp", "off", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.model.kind == "ae" and saved.train.seed == 3 and saved.train.max_steps == 2
    assert saved.train.threads == 2 and saved.train.val_minutes == 5 and saved.train.amp == "off"
    # --resume without --config continues with the run's own settings.
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "3",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    assert "trained 3 steps" in result.output


@pytest.mark.parametrize("section, values, message", [
    ("train", {"learning_rate": 0.1}, "unknown key.*train.learning_rate"),
    ("train", {"batch_size": "big"}, "train.batch_size: expected an integer"),
    ("model", {"onehot": "yes"}, "model.onehot: expected true or false"),
    ("model", {"kind": "vae"}, "model.kind"),
    ("preprocessing", {"shape": [40, 48]}, "preprocessing.shape"),
    ("scoring", {"contrast_median_mm": {"t1": -1}}, "scoring.contrast_median_mm.t1: expected a size in mm >= 0"),
    ("scoring", {"contrast_median_mm": [10]}, "scoring.contrast_median_mm: expected a mapping"),
])
def test_bad_config_is_a_clear_error_and_writes_nothing(tmp_path, cache, section, values, message):
    path = write_yaml(tmp_path / "bad.yaml", cache, **{section: values})
    result = CliRunner().invoke(main, ["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert pytest.importorskip("re").search(message, result.output), result.output
    assert not (tmp_path / "run").exists()


def test_unknown_section_and_unreadable_yaml_are_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("optimiser: {lr: 1}\n")
    with pytest.raises(ConfigError, match="unknown section.*optimiser"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "b.yaml")


def test_an_occupied_run_folder_needs_resume_or_overwrite(tmp_path, cache, capsys):
    config = tiny_config(cache, **{"model.kind": "ae", "train.max_steps": 1})
    train(config, tmp_path / "run", resume=True, progress=False)  # nothing to resume yet: it starts, saying so
    assert "no checkpoint yet" in capsys.readouterr().out
    with pytest.raises(TrainingError, match="already holds a run"):
        train(config, tmp_path / "run", progress=False)
    with pytest.raises(TrainingError, match="give one of them"):
        train(config, tmp_path / "run", resume=True, overwrite=True, progress=False)


def test_data_folder_without_scans_is_a_clear_error(tmp_path):
    pytest.importorskip("dal.data.layouts", reason="dal.data.layouts (find_cases) lands with the data branch")
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "no usable scan" in result.output
    assert not (tmp_path / "run").exists()


def test_the_shipped_default_yaml_is_the_default_config():
    shipped = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    assert load_config(shipped) == Config()
    # "every setting": no key left to its default by omission
    written = yaml.safe_load(shipped.read_text())
    assert {s: set(v) for s, v in written.items()} == {s: set(v) for s, v in Config().to_dict().items()}


def test_registered_scans_without_tissue_maps_get_the_mni152_prior():
    import numpy as np

    from dal.data import ModelVolume, PreprocessConfig, Preprocessor
    from dal.engine.sources import with_template_tissue

    preprocessor = Preprocessor(PreprocessConfig(register=True, spacing=4.0, shape=(40, 48, 40)))
    mask = np.zeros((40, 48, 40), bool)
    mask[12:28, 14:34, 12:28] = True
    volume = ModelVolume(np.zeros(mask.shape, np.float32), mask, None, "registered")
    (done,) = with_template_tissue([volume], preprocessor)
    assert done.tissue.shape == (3, 40, 48, 40)
    assert np.all(done.tissue[:, ~mask] == 0)
    total = done.tissue.sum(0)[mask]
    assert np.mean(np.abs(total - 1) < 1e-5) > 0.99  # one inside the template brain; no prior outside it
    assert np.all((np.abs(total - 1) < 1e-5) | (total < 0.05))
    csf, gm, wm = done.tissue[:, mask].mean(1)
    assert gm > 0.3 and wm > 0.3 and csf < 0.25  # the deep brain: grey (thalamus, cortex) and white matter


def test_real_data_without_healthy_validation_holds_out_training_scans_for_the_thresholds(tmp_path):
    import numpy as np

    from dal.data import ModelVolume

    scans = [ModelVolume(np.full((2, 2, 2), i, np.float32), np.ones((2, 2, 2), bool), None, f"s{i}") for i in range(10)]
    lesion = ModelVolume(scans[0].image, scans[0].mask, None, "l", np.ones((2, 2, 2), np.uint8), "t1", "tumour")
    config = Config().replace({"data.data": str(tmp_path), "data.contrast": "t1", "data.heldout_fraction": 0.2})
    train, val, held = train_module._hold_out_healthy(config, scans, [lesion])
    assert held == 2 and len(train) == 8 and val[0] is lesion
    assert {v.name for v in val[1:]}.isdisjoint(v.name for v in train) and all(v.healthy for v in val[1:])
    assert [v.name for v in train] == sorted((v.name for v in train), key=lambda name: int(name[1:]))  # in order
    assert (val[1].contrast, val[1].lesion) == ("t1", "none")
    again = train_module._hold_out_healthy(config, scans, [lesion])[0]
    assert [v.name for v in again] == [v.name for v in train]  # drawn from the seed
    assert train_module._hold_out_healthy(config, scans, val)[2] == 0  # healthy validation already: none held out
    with pytest.raises(TrainingError, match="too few to hold out"):
        train_module._hold_out_healthy(config, scans[:1], [lesion])


def test_calibration_gives_each_contrast_its_own_thresholds_beside_the_pooled_ones():
    """Two healthy T1 scans whose scores run higher than one healthy FLAIR's: the pooled 1%
    threshold lies between, each contrast's own flags 1% of its brain."""
    from types import SimpleNamespace

    from dal.engine.train import _calibration

    mask = np.ones((10, 10, 10), bool)
    ramp = torch.arange(1000, dtype=torch.float32).reshape(10, 10, 10) / 1000  # 0 .. 0.999
    healthy = [(SimpleNamespace(contrast="t1", mask=mask), {"score": ramp + 1, "residual_scale": 1.0}),
               (SimpleNamespace(contrast="t1", mask=mask), {"score": ramp + 1, "residual_scale": 3.0}),
               (SimpleNamespace(contrast="flair", mask=mask), {"score": ramp, "residual_scale": 4.0})]
    thresholds, reference = _calibration(healthy)
    assert set(thresholds) == {f"fpr_{f}{c}" for f in ("0.01", "0.05") for c in ("", "/t1", "/flair")}
    assert thresholds["fpr_0.01/t1"] == pytest.approx(1.99) and thresholds["fpr_0.01/flair"] == pytest.approx(0.99)
    assert thresholds["fpr_0.01/flair"] < thresholds["fpr_0.01"] <= thresholds["fpr_0.01/t1"]
    for contrast, (_, scored) in (("t1", healthy[0]), ("flair", healthy[2])):
        flagged = float((scored["score"] >= thresholds[f"fpr_0.01/{contrast}"]).float().mean())
        assert flagged == pytest.approx(0.01)
    assert set(reference) == {POPULATION_KEY}
    # The population statistic in the residual's units (score x residual scale): the median of the
    # three scans' 90th percentiles, 1.9, 3 x 1.9 and 4 x 0.9 (1.9 unscaled).
    assert reference[POPULATION_KEY] == pytest.approx(4 * 0.8991, rel=1e-3)


def test_the_healthy_population_of_a_data_folder_is_its_healthy_scans_of_each_contrast_with_two():
    from dal.data import ModelVolume

    def scan(name, contrast, lesion=False):
        return ModelVolume(np.zeros((2, 2, 2), np.float32), np.ones((2, 2, 2), bool), None, name,
                           np.ones((2, 2, 2), np.uint8) if lesion else None, contrast, "tumour" if lesion else "none")

    config = Config().replace({"data.data": "scans"})
    unknown = [scan("a", ""), scan("b", ""), scan("c", "", lesion=True)]
    assert [v.name for v in train_module.healthy_population_volumes(config, unknown)] == ["a", "b"]  # one, unlabelled
    mixed = [scan("a", "t1"), scan("b", "t1"), scan("c", "t2")]
    assert [v.name for v in train_module.healthy_population_volumes(config, mixed)] == ["a", "b"]  # one T2 is too few
    with pytest.raises(TrainingError, match=r"no contrast has two healthy scans .*\{'t2': 1\}"):
        train_module.healthy_population_volumes(config, mixed[2:])


def test_a_zscore_of_an_unknown_contrast_is_one_population_of_every_scan():
    from dal.models import ModelConfig, ZScoreBaseline

    model = ZScoreBaseline(ModelConfig(kind="zscore"), (2, 2, 2))
    images = [np.full((2, 2, 2), v, np.float32) for v in (1.0, 3.0)]
    model.fit_population(images, [np.ones((2, 2, 2), bool)] * 2, ["", ""])
    mean, std = model.expected_volume(torch.zeros(2, 2, 2))  # no contrast asked: the one population
    assert torch.equal(mean, torch.full((2, 2, 2), 2.0)) and torch.allclose(std, torch.full((2, 2, 2), 2 ** 0.5))
    two = ZScoreBaseline(ModelConfig(kind="zscore", contrasts=("t1", "t2")), (2, 2, 2))
    with pytest.raises(ArgumentError, match="the t2 population needs two scans or more, got 1"):
        two.fit_population(images + images[:1], [np.ones((2, 2, 2), bool)] * 3, ["t1", "t1", "t2"])
