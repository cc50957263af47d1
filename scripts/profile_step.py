"""Where a training step's time goes: torch.profiler over steps of one model at the benchmark's
sizes (batch 32 of 96 x 112, channels-last, as `dal train` runs it).

    python scripts/profile_step.py [dal|dae|ae] [--steps 2] [--threads 1] [--bf16] [--rows 20]

Prints the operators by their own CPU time. The numbers that count for a claim come from
`pytest benchmarks/bench_models.py --benchmark-only`; this says why.
"""
import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from dal.models import LossConfig, ModelConfig, build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", nargs="?", default="dal", choices=["dal", "dae", "ae"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast, as train.amp auto on CPUs with native bf16")
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(32, 1, 96, 112, generator=g)
    batch = {"image": image, "view1": image, "view2": torch.rand(32, 1, 96, 112, generator=g),
             "mask": torch.ones(32, 1, 96, 112), "tissue": torch.softmax(torch.randn(32, 4, 96, 112, generator=g), 1)}
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=args.kind), LossConfig()).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()

    step()  # warm-up: oneDNN primitives, allocator
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(args.steps):
            step()
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
