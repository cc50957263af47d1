"""DistributedDataParallel: two CPU processes with gloo under torchrun train in lockstep.

Run as a test, this file launches itself under ``torch.distributed.run``; run as a script, it is
one worker: it trains the tiny config, then gathers every process's weights and writes, from
rank 0, the largest difference between them. The workers import dal as installed (no source
tree put first on the path), so they train on the compiled ops where the package has them.
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
    result = json.loads((tmp_path / "run" / "ddp.json").read_text())
    assert result["world_size"] == 2
    assert result["max_weight_difference"] == 0.0
    assert result["weights_changed"]  # they trained, in lockstep
    assert result["steps"] == 3 and (tmp_path / "run" / "best.safetensors").is_file()
    # The package the workers ran is the one this test imports, on its compiled path where it has one.
    import dal
    from dal import ops

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
    gathered = [torch.zeros_like(weights) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, weights)
    if dist.get_rank() == 0:
        result = {"world_size": dist.get_world_size(), "steps": summary["steps"],
                  "max_weight_difference": max(float((g - gathered[0]).abs().max()) for g in gathered),
                  "weights_changed": bool((gathered[0] - initial).abs().max() > 0), "dal": dal.__file__,
                  "paths": {op: ops.implementation(op) for op in ("onehot_st", "sobel")}}
        (Path(out) / "ddp.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
