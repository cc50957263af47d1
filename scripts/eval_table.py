"""Turns `dal evaluate` and `dal infer` outputs into the README's accuracy tables.

    python scripts/eval_table.py [--ap | --cells | --flagged] NAME=EVAL_DIR[,EVAL_DIR...] [...]
    python scripts/eval_table.py --healthy NAME=INFER_JSON[,INFER_JSON...] [...]

Default: one row per model and group (all, each contrast, each lesion type): the mean per-volume
AP, AUROC, best Dice and Dice at the 5% false-positive threshold, over the volumes with lesion.
With --ap: one row per model, the mean per-volume AP of each group in columns. With --cells: the
mean AP of every contrast x lesion-type cell. With --flagged: the fraction of the brain above
the 1% threshold in the test's volumes without lesion, per contrast. With --healthy: what `dal infer` found on a healthy
scan (brain fraction above the 1% threshold, false lesions, the largest, the population distance).
Several folders after one name (one per training seed) are averaged; each value is then shown
as the mean with the seeds' range.
"""
import json
import sys


def fmt(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})"


def groups(folder):
    """{group: {metric: mean}} of one `dal evaluate` output, "all" first, then each contrast x
    lesion-type cell as "contrast=C, lesion_type=L"."""
    data = json.load(open(f"{folder}/metrics.json"))
    summary = data["summary"]
    overall = {key: summary.get(f"mean_{key}") for key in ("average_precision", "auroc", "best_dice", "dice_fpr_0.05")}
    overall["lesion_volumes"] = summary["lesion_volumes"]
    out = {"all": overall, **{k: v for k, v in data["groups"].items() if v.get("lesion_volumes")}}
    cells = {}
    for row in data["rows"]:
        if row.get("average_precision") is not None:
            cells.setdefault(f"{row['contrast']} {row['lesion_type']}", []).append(row["average_precision"])
    for cell, values in sorted(cells.items()):
        out[f"cell={cell}"] = {"average_precision": sum(values) / len(values), "lesion_volumes": len(values)}
    return out


def runs(argument):
    name, folders = argument.split("=", 1)
    return name, [groups(folder) for folder in folders.split(",")]


def full_table(models):
    print("| model | group | lesion volumes | AP | AUROC | best Dice | Dice @5% FPR |\n|---|---|---|---|---|---|---|")
    for name, seeds in models:
        for group, m in seeds[0].items():
            if group.startswith("cell="):
                continue
            values = {key: [s.get(group, {}).get(key) for s in seeds]
                      for key in ("average_precision", "auroc", "best_dice", "dice_fpr_0.05")}
            print(f"| {name} | {group} | {m['lesion_volumes']} | {fmt(values['average_precision'])} | "
                  f"{fmt(values['auroc'])} | {fmt(values['best_dice'])} | {fmt(values['dice_fpr_0.05'])} |")


def ap_table(models, cells=False):
    columns = list(dict.fromkeys(group for _, seeds in models for group in seeds[0]
                                 if group.startswith("cell=") == cells or group == "all"))
    names = [c.split("=", 1)[-1] for c in columns]
    print("| model | mean AP, " + " | ".join(names) + " |\n|---|" + "---|" * len(columns))
    for name, seeds in models:
        print(f"| {name} | " + " | ".join(fmt([s.get(c, {}).get("average_precision") for s in seeds])
                                          for c in columns) + " |")


def flagged_table(arguments):
    tables = []
    for argument in arguments:
        name, folders = argument.split("=", 1)
        tables.append((name, [json.load(open(f"{folder}/metrics.json"))["summary"] for folder in folders.split(",")]))
    prefix, suffix = "healthy_", "_brain_flagged_fpr_0.01"
    contrasts = list(dict.fromkeys(key[len(prefix):-len(suffix)] for _, summaries in tables for key in summaries[0]
                                   if key.startswith(prefix) and key.endswith(suffix) and key != prefix[:-1] + suffix))
    print("| model | healthy volumes, all | " + " | ".join(contrasts) + " |\n|---|---|" + "---|" * len(contrasts))
    for name, summaries in tables:
        keys = [prefix[:-1] + suffix] + [f"{prefix}{c}{suffix}" for c in contrasts]
        print(f"| {name} | " + " | ".join(fmt([None if s.get(k) is None else 100 * s[k] for s in summaries]) + "%"
                                          for k in keys) + " |")


def healthy_table(arguments):
    print("| model | brain above the 1% threshold | false lesions | largest (ml) | population distance |\n"
          "|---|---|---|---|---|")
    for argument in arguments:
        name, paths = argument.split("=", 1)
        reports = [json.load(open(path)) for path in paths.split(",")]
        column = lambda key: [r.get(key) for r in reports]  # noqa: E731
        print(f"| {name} | {fmt([100 * v for v in column('brain_fraction_above_threshold')])}% | "
              f"{fmt(column('lesion_count'))} | {fmt(column('largest_lesion_ml'))} | "
              f"{fmt(column('population_distance'))} |")


def main(arguments):
    if "--healthy" in arguments:
        return healthy_table([a for a in arguments if a != "--healthy"])
    if "--flagged" in arguments:
        return flagged_table([a for a in arguments if a != "--flagged"])
    models = [runs(a) for a in arguments if not a.startswith("--")]
    if "--cells" in arguments:
        ap_table(models, cells=True)
    elif "--ap" in arguments:
        ap_table(models)
    else:
        full_table(models)


if __name__ == "__main__":
    main(sys.argv[1:])
