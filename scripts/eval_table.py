"""Turns `dal evaluate` outputs into the README's accuracy table.

    python scripts/eval_table.py dal=EVAL_DIR ae=EVAL_DIR dae=EVAL_DIR

One row per model and group (all, each contrast, each lesion type): the mean per-volume AP,
AUROC, best Dice and Dice at the 5% false-positive threshold, over the volumes with lesion.
"""
import json
import sys


def fmt(value):
    return "n/a" if value is None else f"{value:.3f}"


def main(pairs):
    print("| model | group | lesion volumes | AP | AUROC | best Dice | Dice @5% FPR |\n|---|---|---|---|---|---|---|")
    for name, folder in (p.split("=", 1) for p in pairs):
        data = json.load(open(f"{folder}/metrics.json"))
        summary = data["summary"]
        overall = {key: summary.get(f"mean_{key}") for key in ("average_precision", "auroc", "best_dice", "dice_fpr_0.05")}
        overall["lesion_volumes"] = summary["lesion_volumes"]
        groups = {"all": overall, **{k: v for k, v in data["groups"].items() if v.get("lesion_volumes")}}
        for group, m in groups.items():
            count = m["lesion_volumes"]
            print(f"| {name} | {group} | {count} | {fmt(m.get('average_precision'))} | {fmt(m.get('auroc'))} | "
                  f"{fmt(m.get('best_dice'))} | {fmt(m.get('dice_fpr_0.05'))} |")


if __name__ == "__main__":
    main(sys.argv[1:])
