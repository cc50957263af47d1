"""scripts/oracle_phi.py: a test set scored against each case's healthy twin."""
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from dal.data.synthetic import write_dataset

SCRIPT = Path(__file__).parents[1] / "scripts" / "oracle_phi.py"


def _oracle(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_the_healthy_twin_finds_the_lesion_and_a_scan_changed_since_is_refused(tmp_path):
    write_dataset(tmp_path / "set", 2, contrasts=("flair",), lesions=("none", "tumour"), seed=5)
    done = _oracle(tmp_path / "set", "--windows", "2,10")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| flair tumour |"))
    aps = [float(cell) for cell in row.strip("|").split("|")[1:]]
    assert len(aps) == 2 and min(aps) > 0.8  # the twin differs from the scan only at the tumour
    path = next((tmp_path / "set" / "synth-0001").glob("*_flair.nii.gz"))
    image = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) + 50, image.affine, image.header), str(path))
    refused = _oracle(tmp_path / "set")
    assert refused.returncode != 0 and "not what this generator makes" in refused.stderr
