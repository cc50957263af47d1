"""The Python steps of scripts/gpu-check.sh.

  python scripts/gpu_check.py train OUT.json [--steps N]   time training steps on synthetic tensors
  python scripts/gpu_check.py report OUT.json PARTS...       merge the steps' results into one JSON

`train` times dal, ae and dae training steps (forward, backward, AdamW; batch 32 of 96x112
slices, channels-last, as `dal train` runs them) in float32 and under bfloat16 autocast, on the
GPU, or on the CPU for a dry run (one float32 step each: it checks the code, not the speed).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

BATCH, H, W = 32, 96, 112


def _batch(device):
    import torch

    g = torch.Generator().manual_seed(0)
    image = torch.rand(BATCH, 1, H, W, generator=g)
    tensors = {"image": image, "view1": image, "view2": torch.rand(BATCH, 1, H, W, generator=g),
               "mask": torch.ones(BATCH, 1, H, W), "tissue": torch.softmax(torch.randn(BATCH, 4, H, W, generator=g), 1)}
    return {k: v.to(device) for k, v in tensors.items()}


def train(out: Path, steps: int, warmup: int) -> None:
    import torch

    from dal.models import LossConfig, ModelConfig, build_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        steps, warmup = 1, 0
    batch = _batch(device)
    results = []
    for kind in ("dal", "ae", "dae"):
        for bf16 in (False, True) if device == "cuda" else (False,):
            torch.manual_seed(0)
            model = build_model(ModelConfig(kind=kind), LossConfig()).to(device, memory_format=torch.channels_last)
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
            losses = []

            def step():
                with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                    loss = model(batch)["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())

            for _ in range(warmup):
                step()
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / steps
            finite = all(bool(torch.isfinite(v)) for v in losses)
            results.append({"model": kind, "precision": "bf16 autocast" if bf16 else "float32", "steps": steps,
                            "step_ms": round(1000 * seconds, 3), "images_per_s": round(BATCH / seconds, 1),
                            "first_loss": float(losses[0]), "last_loss": float(losses[-1]), "losses_finite": finite})
            print(f"train {kind:4s} {results[-1]['precision']:13s} {results[-1]['step_ms']:9.2f} ms/step", flush=True)
    out.write_text(json.dumps({"device": device, "batch": [BATCH, 1, H, W], "runs": results}, indent=1))


def _junit(path: Path) -> dict:
    """Counts and failures of a pytest --junitxml file."""
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "failed": failed}


def _benchmarks(path: Path) -> list[dict]:
    """One row per benchmark of a pytest-benchmark JSON: group, name, mean / median / min in ms."""
    data = json.loads(path.read_text())
    return [{"group": b["group"], "name": b["name"], "rounds": b["stats"]["rounds"],
             **{f"{k}_ms": round(1000 * b["stats"][k], 4) for k in ("mean", "median", "min", "stddev")}}
            for b in data["benchmarks"]]


def report(out: Path, parts: list[str]) -> None:
    """Merges NAME=PATH parts (*.xml: pytest results, *.bench.json: benchmarks, *.json: as is,
    else a text file) and the machine into one JSON."""
    import torch

    result = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "gpus": torch.cuda.device_count(),
    }
    try:
        from dal import _build_info
        from dal.ops import cpu_kernel

        result["dal_build"] = {"with_cuda": _build_info.WITH_CUDA, "cuda_arch_list": _build_info.CUDA_ARCH_LIST,
                               "cpu_sobel_kernel": cpu_kernel("sobel")}
    except ImportError as error:
        result["dal_build"] = f"not importable: {error}"
    for part in parts:
        name, _, path = part.partition("=")
        p = Path(path)
        if not p.exists():
            result[name] = None
        elif p.name.endswith(".xml"):
            result[name] = _junit(p)
        elif p.name.endswith(".bench.json"):
            result[name] = _benchmarks(p)
        elif p.name.endswith(".json"):
            result[name] = json.loads(p.read_text())
        else:
            result[name] = p.read_text().strip()
    out.write_text(json.dumps(result, indent=1))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train")
    t.add_argument("out", type=Path)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--warmup", type=int, default=3)
    r = commands.add_parser("report")
    r.add_argument("out", type=Path)
    r.add_argument("parts", nargs="*")
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args.out, args.steps, args.warmup)
    else:
        report(args.out, args.parts)


if __name__ == "__main__":
    main(sys.argv[1:])
