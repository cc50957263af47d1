"""The README's code runs: its Python example, as written, on a scan named as it names it."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infer_phantoms import phantom, save

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_a_python_example():
    assert python_blocks(), "the README lost its Python example"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_the_readme_python_example_runs(tmp_path, index):
    save(tmp_path / "scan.nii.gz", phantom()[0])
    code = python_blocks()[index]
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    if "result.save(" in code:
        assert (tmp_path / "out" / "scan.json").is_file() and (tmp_path / "out" / "scan_anomaly.nii.gz").is_file()
    if "lesion_volume_ml" in code:
        assert re.fullmatch(r"[0-9.e+-]+\n", run.stdout), run.stdout  # the lesion volume in ml
    if "dal.evaluate(" in code:
        assert (tmp_path / "evaluation" / "metrics.json").is_file()
        lines = run.stdout.splitlines()
        assert [re.sub(r" \d+ lesion\(s\)$", "", line) for line in lines[:2]] == [
            "synth-0000_flair.nii.gz", "synth-0001_flair.nii.gz"], lines
        assert len(lines) == 3 and lines[-1].startswith("CheckpointError "), lines
