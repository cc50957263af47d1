"""Turns `dal evaluate` outputs into the README's accuracy tables.

    python scripts/eval_table.py [--ap] NAME=EVAL_DIR [NAME=EVAL_DIR ...]

Default: one row per model and group (all, each contrast, each lesion type): the mean per-volume
AP, AUROC, best Dice and Dice at the 5% false-positive threshold, over the volumes with lesion.
With --ap: one row per model, the mean per-volume AP of each group in columns.
"""
import json
import sys


def fmt(value):
    return "n/a" if value is None else f"{value:.3f}"


def groups(folder):
    """{group: {metric: mean}} of one `dal evaluate` output, "all" first."""
    data = json.load(open(f"{folder}/metrics.json"))
    summary = data["summary"]
    overall = {key: summary.get(f"mean_{key}") for key in ("average_precision", "auroc", "best_dice", "dice_fpr_0.05")}
    overall["lesion_volumes"] = summary["lesion_volumes"]
    return {"all": overall, **{k: v for k, v in data["groups"].items() if v.get("lesion_volumes")}}


def full_table(models):
    print("| model | group | lesion volumes | AP | AUROC | best Dice | Dice @5% FPR |\n|---|---|---|---|---|---|---|")
    for name, by_group in models:
        for group, m in by_group.items():
            print(f"| {name} | {group} | {m['lesion_volumes']} | {fmt(m.get('average_precision'))} | "
                  f"{fmt(m.get('auroc'))} | {fmt(m.get('best_dice'))} | {fmt(m.get('dice_fpr_0.05'))} |")


def ap_table(models):
    columns = list(dict.fromkeys(group for _, by_group in models for group in by_group))
    names = [c.split("=", 1)[-1] for c in columns]
    print("| model | mean AP, " + " | ".join(names) + " |\n|---|" + "---|" * len(columns))
    for name, by_group in models:
        print(f"| {name} | " + " | ".join(fmt(by_group.get(c, {}).get("average_precision")) for c in columns) + " |")


def main(arguments):
    compact = "--ap" in arguments
    models = [(name, groups(folder)) for name, folder in (a.split("=", 1) for a in arguments if a != "--ap")]
    (ap_table if compact else full_table)(models)


if __name__ == "__main__":
    main(sys.argv[1:])
