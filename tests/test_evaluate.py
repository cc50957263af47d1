"""dal evaluate: per-volume metrics equal to scikit-learn's on the same maps, means over volumes
with lesion only, pooled values, groups, CSV/JSON/HTML outputs that stand alone."""
import csv
import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score

from dal.cli import main
from dal.data.io import DataError
from dal.engine.evaluate import evaluate_folder
from dal.engine.infer import Detector

from infer_phantoms import oracle_checkpoint, phantom, save, tiny_checkpoint

CASES = {"c1": ("tumour", 0), "c2": ("stroke", 1), "c3": ("none", 2)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A dal synth-like folder (manifest with lesion types): two cases with a lesion, one without,
    one without label (left out); each case has a T1 scan, its brain mask and its label."""
    root = tmp_path_factory.mktemp("data")
    entries = []
    for case, (lesion, seed) in {**CASES, "c4": ("none", 3)}.items():
        scan, label, brain = phantom(lesion=lesion != "none", seed=seed)
        (root / case).mkdir()
        files = {"t1": save(root / case / f"{case}_t1.nii.gz", scan),
                 "mask": save(root / case / f"{case}_mask.nii.gz", brain)}
        if case != "c4":
            files["seg"] = save(root / case / f"{case}_seg.nii.gz", label)
        entries.append({"id": case, "lesion": lesion, "files": {k: f"{case}/{v.name}" for k, v in files.items()}})
    (root / "manifest.json").write_text(json.dumps({"generator": "dal synth", "cases": entries}))
    return root


@pytest.fixture(scope="module")
def oracle_report(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, evaluate_folder(Detector(oracle_checkpoint()), data, out)


def test_rows_match_scikit_learn_on_the_same_maps(data, oracle_report):
    _, report = oracle_report
    detector = Detector(oracle_checkpoint())
    rows = {row["case"]: row for row in report["rows"]}
    assert sorted(rows) == ["c1", "c2", "c3"]
    for case in ("c1", "c2"):
        result = detector.predict(data / case / f"{case}_t1.nii.gz", data / case / f"{case}_mask.nii.gz")
        label = detector.preprocessor.to_model(phantom(seed=CASES[case][1])[1], result.model_space["state"]) > 0
        inside = result.model_space["mask"]
        y, s = label[inside], result.model_space["score"][inside]
        assert rows[case]["average_precision"] == pytest.approx(average_precision_score(y, s))
        assert rows[case]["auroc"] == pytest.approx(roc_auc_score(y, s))
        assert rows[case]["average_precision"] > 0.8  # the oracle sees the lesion
        assert rows[case]["lesions"] == 1 and rows[case]["lesion_recall_fpr_0.05"] == 1.0
        assert rows[case]["lesion_type"] == CASES[case][0]
    healthy = rows["c3"]
    assert healthy["lesion_voxels"] == 0 and healthy["average_precision"] is None and healthy["dice_fpr_0.01"] is None
    assert healthy["false_positive_lesions_fpr_0.01"] == 0


def test_means_leave_out_volumes_without_lesion_and_say_so(oracle_report):
    _, report = oracle_report
    summary, rows = report["summary"], report["rows"]
    with_lesion = [r for r in rows if r["lesion_voxels"] > 0]
    assert summary["volumes"] == 3 and summary["lesion_volumes"] == 2 and summary["volumes_without_lesion"] == 1
    assert "without lesion" in summary["note"]
    for key in ("average_precision", "best_dice", "dice_fpr_0.01", "dice_fpr_0.05"):
        assert summary["mean_" + key] == pytest.approx(np.mean([r[key] for r in with_lesion]))
    assert 0 < summary["pooled_average_precision"] <= 1
    assert summary["lesion_recall_fpr_0.05"] == 1.0
    assert summary["thresholds"] == {"fpr_0.01": 0.3, "fpr_0.05": 0.2}
    assert report["skipped"] == ["case c4: no lesion label; left out"]
    assert report["groups"]["lesion_type=tumour"]["lesion_volumes"] == 1
    assert report["groups"]["contrast=t1"]["average_precision"] == pytest.approx(summary["mean_average_precision"])


def test_csv_json_and_a_self_contained_html_report(oracle_report):
    out, report = oracle_report
    with open(out / "metrics.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [row["case"] for row in table] == [row["case"] for row in report["rows"]]
    assert float(table[0]["average_precision"]) == pytest.approx(report["rows"][0]["average_precision"])
    assert table[2]["average_precision"] == ""  # no AP without lesion
    assert json.loads((out / "metrics.json").read_text()) == report
    page = (out / "report.html").read_text()
    images = re.findall(r"src='([^']*)'", page)
    assert len(images) == 1 + 3  # the precision-recall curves and one overlay per volume
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"""(src|href)=['"]?(https?:|//)""", page)  # nothing fetched: it opens offline
    assert "<table>" in page and "c4: no lesion label" in page
    viewer = json.loads(re.search(r"<script type='application/json' id='dal-viewer-data'>(.*?)</script>", page).group(1))
    assert [scan["title"] for scan in viewer] == [f"{row['case']}_t1" for row in report["rows"]]
    assert all({"scan", "phi", "score", "lesions", "label"} <= set(scan["volumes"]) for scan in viewer)
    # one threshold story: the pictures use dal infer's (1%), and the report says so
    assert viewer[0]["threshold"] == report["summary"]["thresholds"]["fpr_0.01"]
    assert "One threshold, 0.3 (calibrated at 1% false-positive voxels" in page


def test_the_command_with_a_real_checkpoint(tmp_path, data):
    model = tiny_checkpoint(tmp_path / "m.safetensors")
    result = CliRunner().invoke(main, ["evaluate", "--data", str(data), "--model", str(model), "--out",
                                       str(tmp_path / "out"), "--no-overlays", "--threads", "1"])
    assert result.exit_code == 0, result.stderr
    assert "3 volume(s), 2 with lesion" in result.stdout and "report:" in result.stdout
    assert (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "metrics.csv").exists()
    assert "no lesion label" in result.stderr
    assert "dal evaluate: volume 3 of 3: c3_t1" in result.stderr and "\r" not in result.stderr  # a log: no bar


def test_a_folder_without_labels_or_scans_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable scan"):
        evaluate_folder(Detector(oracle_checkpoint()), tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    save(tmp_path / "flat" / "a_t1.nii.gz", phantom()[0])
    with pytest.raises(DataError, match="no case has a lesion label"):
        evaluate_folder(Detector(oracle_checkpoint()), tmp_path / "flat")
    result = CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "nowhere"), "--model",
                                       str(tiny_checkpoint(tmp_path / "m.safetensors")), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no such folder" in result.stderr


def test_a_broken_scan_is_reported_and_the_rest_evaluated(tmp_path, data):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(data, root)
    (root / "c2" / "c2_t1.nii.gz").write_bytes(b"broken")
    report = evaluate_folder(Detector(oracle_checkpoint()), root, None)
    assert [row["case"] for row in report["rows"]] == ["c1", "c3"]
    assert len(report["failures"]) == 1 and "c2_t1.nii.gz" in report["failures"][0]
    assert torch.tensor(report["summary"]["mean_average_precision"]) > 0.8


def test_summarise_on_hand_made_maps():
    """The summarise step alone: a volume whose lesion scores highest, and one without lesion
    whose single bright voxel outranks it, so that only the pooled values see the false positive."""
    from dal.data.layouts import Case
    from dal.engine.evaluate import Job, Scored, summarise

    brain = np.ones((4, 4, 4), bool)
    lesion = np.zeros_like(brain)
    lesion[0, 0, :2] = True
    with_lesion = np.where(lesion, 1.0, 0.0).astype(np.float32)
    without = np.zeros(brain.shape, np.float32)
    without[3, 3, 3] = 1.5
    scored = Scored()
    scored.add(Job(Case("a"), "t1", "tumour"), lesion, {"score": with_lesion, "mask": brain}, [])
    scored.add(Job(Case("b"), "t1", None), np.zeros_like(brain), {"score": without, "mask": brain}, ["odd scan"])
    done = summarise(scored, {"fpr_0.01": 0.5}, 1, "model space", None)
    summary, (a, b) = done["summary"], done["rows"]
    assert (summary["volumes"], summary["lesion_volumes"], summary["volumes_without_lesion"]) == (2, 1, 1)
    assert a["lesion_voxels"] == 2 and a["average_precision"] == a["best_dice"] == a["dice_fpr_0.01"] == 1.0
    assert a["lesions"] == 1 and a["lesion_recall_fpr_0.01"] == 1.0 and a["false_positive_lesions_fpr_0.01"] == 0
    assert np.isnan(b["average_precision"]) and b["dice_fpr_0.01"] is None and b["false_positive_lesions_fpr_0.01"] == 1
    assert b["lesion_type"] is None and b["warnings"] == "odd scan"
    assert summary["mean_average_precision"] == 1.0 and summary["mean_dice_fpr_0.01"] == 1.0
    # pooled, the bright voxel comes first: recall reaches 1 at the lesion's score with 2 of 3 voxels right
    assert summary["pooled_average_precision"] == pytest.approx(2 / 3)
    assert summary["lesion_recall_fpr_0.01"] == 1.0 and summary["false_positive_lesions_per_volume_fpr_0.01"] == 0.5
    assert summary["healthy_brain_flagged_fpr_0.01"] == summary["healthy_t1_brain_flagged_fpr_0.01"] == 1 / 64
    assert done["groups"] == {"contrast=t1": {"lesion_volumes": 1, "average_precision": 1.0, "auroc": 1.0,
                                              "best_dice": 1.0, "dice_fpr_0.01": 1.0, "dice_fpr_0.05": None,
                                              "lesion_recall_fpr_0.01": 1.0, "lesion_recall_fpr_0.05": None},
                              "lesion_type=tumour": done["groups"]["contrast=t1"]}


def test_summarise_takes_each_volume_s_contrast_threshold():
    """The same lesion map on a T1 and a FLAIR scan: the FLAIR's own threshold lies above its
    score, so it finds nothing there, while the T1 takes the pooled one and finds the lesion."""
    from dal.data.layouts import Case
    from dal.engine.evaluate import Job, Scored, summarise

    brain = np.ones((4, 4, 4), bool)
    lesion = np.zeros_like(brain)
    lesion[0, 0, :2] = True
    score = np.where(lesion, 1.0, 0.0).astype(np.float32)
    scored = Scored()
    for case, contrast in (("a", "t1"), ("b", "flair")):
        scored.add(Job(Case(case), contrast, "wmh"), lesion, {"score": score, "mask": brain}, [])
    rows = summarise(scored, {"fpr_0.01": 0.5, "fpr_0.01/flair": 2.0}, 1, "model space", None)["rows"]
    assert [row["threshold_fpr_0.01"] for row in rows] == [0.5, 2.0]
    assert [row["dice_fpr_0.01"] for row in rows] == [1.0, 0.0]
    assert [row["lesion_recall_fpr_0.01"] for row in rows] == [1.0, 0.0]
    assert [row["brain_flagged_fpr_0.01"] for row in rows] == [2 / 64, 0.0]
