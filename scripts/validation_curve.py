"""The validation curve of `dal train` runs: mean validation AP (and its contrasts) against the
training step, read from each run's metrics.jsonl (resumed legs append to the same file).

    python scripts/validation_curve.py RUN [RUN ...] --out docs/validation-curve.png

A run started with --init continues the step count from zero: its curve starts where its
parent's weights stood, and the title says so.
"""
import argparse
import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CONTRASTS = ("ap_t1", "ap_t2", "ap_flair")


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"validation_curve.py: {path}: no such file (is {run} a dal train run folder?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", required=True, type=Path, help="the PNG to write")
    args = parser.parse_args()
    figure = Figure(figsize=(7, 4), dpi=110)
    axes = figure.add_subplot()
    for run in args.runs:
        records = read_metrics(run)
        steps = [r["step"] for r in records]
        line, = axes.plot(steps, [r["ap"] for r in records], marker="o", label=f"{run.name}: mean AP")
        for key, style in zip(CONTRASTS, (":", "--", "-.")):
            if all(key in r for r in records):
                axes.plot(steps, [r[key] for r in records], style, color=line.get_color(), alpha=0.6,
                          label=f"{run.name}: {key[3:]}")
        minutes = records[-1]["seconds"] / 60
        axes.annotate(f"{minutes:.0f} min", (steps[-1], records[-1]["ap"]), textcoords="offset points", xytext=(4, 4))
    axes.set_xlabel("training step (batch 32)")
    axes.set_ylabel("validation AP (synthetic lesions)")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left")
    axes.set_title("dal train: validation AP against step", fontsize=10)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
