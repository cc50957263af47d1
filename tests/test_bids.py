"""dal infer --bids-derivatives: names that follow the BIDS derivative grammar, sidecars with the
threshold and its source, dataset_description.json, and dal's rules about files."""
import json
import re

import pytest
from click.testing import CliRunner

from dal._version import __version__
from dal.cli import main
from dal.data.bids import ENTITY_ORDER, bids_name, derivative_names, parse_name
from dal.data.io import DataError

from infer_phantoms import phantom, save, tiny_checkpoint

# The BIDS file name grammar (specification 1.9, "Filenames"), written out from the spec rather
# than from dal's code: key-value entities in the spec's order, alphanumeric labels, a suffix.
ENTITY = "|".join(ENTITY_ORDER)
BIDS_FILE = re.compile(r"sub-[a-zA-Z0-9]+(_(?:%s)-[a-zA-Z0-9]+)*_[a-zA-Z0-9]+(\.nii\.gz|\.json)" % ENTITY)


def entity_order_ok(name: str) -> bool:
    keys = [part.split("-")[0] for part in name.split(".")[0].split("_")[:-1]]
    return [ENTITY_ORDER.index(k) for k in keys] == sorted(ENTITY_ORDER.index(k) for k in keys)


@pytest.fixture(scope="module")
def bids_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bids")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    for subject, session in (("01", "1"), ("02", None)):
        anat = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
        anat.mkdir(parents=True)
        stem = f"sub-{subject}" + (f"_ses-{session}" if session else "")
        save(anat / f"{stem}_T2w.nii.gz", phantom(seed=int(subject))[0])
        (anat / f"{stem}_T2w.json").write_text("{}")  # the raw sidecar: never touched
    return root


def test_names_follow_the_derivative_grammar_and_keep_every_source_entity():
    folder, names = derivative_names("/d/sub-01/ses-1/anat/sub-01_ses-1_acq-fast_run-2_T2w.nii.gz", "/d")
    assert str(folder) == "sub-01/ses-1/anat"
    assert names["phi"] == "sub-01_ses-1_acq-fast_run-2_desc-pseudohealthy_T2w.nii.gz"
    assert names["lesions"] == "sub-01_ses-1_acq-fast_run-2_space-T2w_desc-lesion_mask.nii.gz"
    assert names["anomaly"] == "sub-01_ses-1_acq-fast_run-2_space-T2w_desc-anomaly_map.nii.gz"
    for name in names.values():
        assert BIDS_FILE.fullmatch(name) and entity_order_ok(name), name
    # the maps of a T1w and a T2w scan of one session never share a name
    _, t1 = derivative_names("/d/sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz", "/d")
    _, t2 = derivative_names("/d/sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz", "/d")
    assert not set(t1.values()) & set(t2.values())


@pytest.mark.parametrize("name", ["sub-01_T2w_desc-anomaly_map.nii.gz", "ses-1_sub-01_T2w.nii.gz",
                                  "sub-0_1_T2w.nii.gz", "sub-01_desc-anomaly_map_T2w.nii.gz", "scan.nii.gz"])
def test_names_outside_the_grammar_are_refused(name):
    with pytest.raises(DataError, match="BIDS"):
        parse_name(name)
    assert not (BIDS_FILE.fullmatch(name) and entity_order_ok(name))


def test_a_label_that_is_not_alphanumeric_is_refused():
    with pytest.raises(ValueError, match="alphanumeric"):
        bids_name({"sub": "01", "desc": "anomaly_map"}, "map", ".nii.gz")


def test_the_command_writes_a_derivative_dataset(tmp_path, bids_root):
    model = tiny_checkpoint(tmp_path / "m.safetensors")
    run = CliRunner().invoke(main, ["infer", str(bids_root), "--bids-derivatives", "--model", str(model),
                                    "--threshold", "0.25", "--threads", "1"])
    assert run.exit_code == 0, run.output
    derivatives = bids_root / "derivatives" / "dal"
    description = json.loads((derivatives / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    generated = description["GeneratedBy"][0]
    assert generated["Name"] == "dal" and generated["Version"] == __version__
    assert generated["Checkpoint"]["Path"] == str(model) and len(generated["Checkpoint"]["SHA256"]) == 64
    anat = derivatives / "sub-01" / "ses-1" / "anat"
    written = sorted(p.name for p in anat.iterdir() if not p.name.startswith("."))
    assert written == sorted(["sub-01_ses-1_desc-pseudohealthy_T2w.nii.gz", "sub-01_ses-1_desc-pseudohealthy_T2w.json",
                              "sub-01_ses-1_space-T2w_desc-lesion_mask.nii.gz",
                              "sub-01_ses-1_space-T2w_desc-lesion_mask.json",
                              "sub-01_ses-1_space-T2w_desc-anomaly_map.nii.gz",
                              "sub-01_ses-1_space-T2w_desc-anomaly_map.json"])
    assert all(BIDS_FILE.fullmatch(n) and entity_order_ok(n) for n in written)
    assert (derivatives / "sub-02" / "anat" / "sub-02_space-T2w_desc-anomaly_map.nii.gz").is_file()
    anomaly = json.loads((anat / "sub-01_ses-1_space-T2w_desc-anomaly_map.json").read_text())
    mask = json.loads((anat / "sub-01_ses-1_space-T2w_desc-lesion_mask.json").read_text())
    for sidecar in (anomaly, mask):
        assert sidecar["Threshold"] == 0.25 and sidecar["ThresholdSource"] == "given"
        assert "bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz" in sidecar["Sources"]
    assert mask["Type"] == "Lesion" and "lesion_volume_ml" in anomaly
    assert (bids_root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_T2w.json").read_text() == "{}"

    again = CliRunner().invoke(main, ["infer", str(bids_root), "--bids-derivatives", "--model", str(model),
                                      "--threshold", "0.25", "--threads", "1"])
    assert again.exit_code == 1 and "--overwrite" in again.stderr  # an earlier run's outputs are kept
