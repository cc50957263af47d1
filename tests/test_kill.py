"""`dal train` and `dal infer` killed (SIGKILL) at random moments, several times: after each kill
nothing partial is visible once the folder is opened again, and the run resumed (train) or run
again (infer) ends with the outputs of an uninterrupted run, with no temporary or lock left.

The moments are drawn from a seeded generator (DAL_KILL_SEED) and printed, so a failure can be
replayed: each is a time after the process took the folder's lock (when it starts to write),
within 1.5 times what the same work took in this process, so the kills land while files are being
written whatever the start-up costs. Every process has a time limit: the test is bounded."""
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from dal.cli import main
from dal.data.locks import LOCK_NAME
from dal.data.outputs import JOURNAL_NAME, output_folder
from dal.engine.checkpoint import load_checkpoint
from dal.engine.config import load_config
from dal.engine.infer import output_names
from dal.engine.train import train

from infer_phantoms import phantom, save, tiny_checkpoint

KILLS = 3
SEED = int(os.environ.get("DAL_KILL_SEED", "17"))
LIMIT_S = 120  # per process: a hang is a failure, not a stuck CI


def dal(*args) -> list[str]:
    return [sys.executable, "-m", "dal", *map(str, args)]


def holds_lock(folder: Path, pid: int) -> bool:
    try:
        return json.loads((folder / LOCK_NAME).read_text())["pid"] == pid
    except (OSError, ValueError, KeyError):
        return False  # no lock yet, one half written, or the stale one of a process killed before


def run_killed(argv: list[str], folder: Path, after_s: float) -> None:
    """Run ``argv``; SIGKILL it ``after_s`` seconds after it locked ``folder`` (if still running)."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + LIMIT_S
    while process.poll() is None and not holds_lock(folder, process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        process.wait(after_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_whole(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=LIMIT_S)
    assert done.returncode == 0, done.stderr[-3000:]


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob(".*") if p.name != JOURNAL_NAME)


def test_train_killed_at_random_moments_resumes_to_the_uninterrupted_run(tmp_path_factory, tmp_path):
    rng = random.Random(SEED)
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump({
        "model": {"kind": "ae", "channels": 4, "levels": 2, "ae_latent": 4},
        "data": {"train_volumes": 2, "val_contrasts": ["t1"], "val_lesions": ["tumour"], "val_healthy": 1,
                 "cache": str(tmp_path_factory.getbasetemp() / "dal-synthetic-cache")},
        # amp off: "auto" times a step at the start of a run, and two runs could choose differently.
        "train": {"batch_size": 4, "checkpoint_every": 2, "val_every": 3, "threads": 1, "max_steps": 8, "amp": "off"},
        "preprocessing": {"spacing": 4.0, "shape": [40, 48, 40]}}))
    train(load_config(config_path), tmp_path / "whole", progress=False)  # also fills the cache
    started = time.perf_counter()
    train(load_config(config_path), tmp_path / "warm", progress=False)
    work_s = time.perf_counter() - started
    run = tmp_path / "run"
    moments = []
    for kill in range(KILLS):
        moment = rng.uniform(0, 1.5 * work_s)
        moments.append(round(moment, 2))
        resume = ["--resume"] if kill else []
        run_killed(dal("train", "--config", config_path, "--out", run, "--quiet", *resume), run, moment)
        if (run / "last.safetensors").exists():
            load_checkpoint(run / "last.safetensors")  # whole, whenever the kill came
    print(f"dal train killed {moments} s after its lock (work {work_s:.1f} s; DAL_KILL_SEED={SEED})")
    run_whole(dal("train", "--config", config_path, "--out", run, "--quiet", "--resume"))

    for name in ("last.safetensors", "best.safetensors"):
        expected, got = load_checkpoint(tmp_path / "whole" / name), load_checkpoint(run / name)
        for key, value in expected.model.state_dict().items():
            torch.testing.assert_close(got.model.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=f"{name} {key}")
    assert load_checkpoint(run / "last.safetensors").training["state"]["step"] == 8

    def records(folder):
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], round(r["ap"], 5)) for r in map(json.loads, lines)]

    assert records(run) == records(tmp_path / "whole")
    assert json.loads((run / "summary.json").read_text())["steps"] == 8
    assert leftovers(run) == []


def test_infer_killed_at_random_moments_runs_again_to_the_same_outputs(tmp_path):
    rng = random.Random(SEED + 1)
    scans = tmp_path / "scans"
    scans.mkdir()
    names = [f"p{i}" for i in range(3)]
    for i, name in enumerate(names):
        save(scans / f"{name}.nii.gz", phantom(seed=i)[0])
    checkpoint = tiny_checkpoint(tmp_path / "tiny.safetensors")
    argv = ["infer", scans, "--model", checkpoint, "--threads", 1, "--no-overlay"]  # no nilearn: a quicker start
    result = CliRunner().invoke(main, [str(a) for a in [*argv, "--out", tmp_path / "whole"]])
    assert result.exit_code == 0, result.output
    started = time.perf_counter()
    result = CliRunner().invoke(main, [str(a) for a in [*argv, "--out", tmp_path / "warm"]])
    work_s = time.perf_counter() - started
    out = tmp_path / "out"
    moments = []
    for _ in range(KILLS):
        moment = rng.uniform(0, 1.5 * work_s)
        moments.append(round(moment, 2))
        run_killed(dal(*argv, "--out", out, "--overwrite"), out, moment)
        if out.exists():
            with output_folder(out):  # what the next run sees: every scan's outputs whole, or none
                for name in names:
                    present = [n for n in output_names(name, overlay=False).values() if (out / n).exists()]
                    assert len(present) in (0, len(output_names(name, overlay=False))), (moments, present)
    print(f"dal infer killed {moments} s after its lock (work {work_s:.1f} s; DAL_KILL_SEED={SEED})")
    run_whole(dal(*argv, "--out", out, "--overwrite"))

    for name in names:
        for suffix in ("_anomaly.nii.gz", "_phi.nii.gz", "_lesions.nii.gz"):
            expected = np.asarray(nib.load(str(tmp_path / "whole" / f"{name}{suffix}")).dataobj)
            np.testing.assert_allclose(np.asarray(nib.load(str(out / f"{name}{suffix}")).dataobj), expected,
                                       rtol=1e-5, atol=1e-6)
        expected, got = (json.loads((folder / f"{name}.json").read_text()) for folder in (tmp_path / "whole", out))
        for summary in (expected, got):
            summary.pop("timings_s")
        assert got == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert leftovers(out) == []


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the in-process runs set one thread
