"""DistributedDataParallel: two CPU processes with gloo under torchrun train in lockstep.

Run as a test, this file launches itself under ``torch.distributed.run``; run as a script, it is
one worker: it trains the tiny config, then saves its weights to a file of its own, which the
test compares. (No collective of the test's own after training: gloo's worker thread can drop
the last one's tensors while Python shuts down, and that aborts the process.) The workers
import dal as installed (no source tree put first on the path), so they train on the compiled
ops where the package has them.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_keep_identical_weights(tmp_path, tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_train import TINY

    spec = json.loads(json.dumps(TINY))
    spec["data"]["cache"] = str(tmp_path_factory.getbasetemp() / "dal-synthetic-cache")  # shared with test_train
    spec["train"].update(max_steps=3, val_every=3)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "DAL_DDP_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), __file__, str(tmp_path / "spec.json"), str(tmp_path / "run")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = [torch.load(tmp_path / "run" / f"ddp-rank{rank}.pt") for rank in (0, 1)]
    assert [result["world_size"] for result in results] == [2, 2]
    assert torch.equal(results[0]["weights"], results[1]["weights"])
    assert (results[0]["weights"] - results[0]["initial"]).abs().max() > 0  # they trained, in lockstep
    assert [result["steps"] for result in results] == [3, 3] and (tmp_path / "run" / "best.safetensors").is_file()
    # The package the workers ran is the one this test imports, on its compiled path where it has one.
    import dal
    from dal import ops

    for result in results:
        assert result["dal"] == dal.__file__
        assert result["paths"] == {op: ops.implementation(op) for op in ("onehot_st", "sobel")}


def _worker(spec_path: str, out: str) -> None:
    import torch.distributed as dist

    import dal
    from dal import ops
    from dal.engine.config import Config
    from dal.engine.train import train

    spec = json.loads(Path(spec_path).read_text())
    defaults = Config().to_dict()
    config = Config.from_dict({**defaults, **{k: {**defaults[k], **v} for k, v in spec.items()}})
    torch.manual_seed(config.train.seed)
    from dal.models import build_model

    initial = torch.cat([p.detach().flatten() for p in build_model(config.model, config.loss).parameters()])
    summary = train(config, out, progress=False)
    weights = torch.cat([p.detach().flatten() for p in summary["model"].parameters()])
    result = {"world_size": dist.get_world_size(), "steps": summary["steps"], "initial": initial, "weights": weights,
              "dal": dal.__file__, "paths": {op: ops.implementation(op) for op in ("onehot_st", "sobel")}}
    torch.save(result, Path(out) / f"ddp-rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
