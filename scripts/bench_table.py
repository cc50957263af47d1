"""Turns a pytest-benchmark JSON file into the README's markdown tables.

    pytest benchmarks/ --benchmark-only --benchmark-json=bench.json
    python scripts/bench_table.py bench.json

One table per benchmark group: each row's median, and its ratio to the group's dal row (the
test whose name contains "_dal"), so that every ratio compares figures from the same run.
"""
import json
import sys
from collections import defaultdict


def fmt_seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.2f} s"


def main(path: str) -> None:
    data = json.load(open(path))
    m = data["machine_info"]
    print(f"Run: {data['datetime']}, {m.get('cpu', {}).get('brand_raw', m.get('processor'))}, "
          f"torch {m.get('torch')}, {m.get('torch_threads')} threads, GPU: {m.get('cuda_device')}\n")
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"]].append(b)
    for group, rows in groups.items():
        dal = [r for r in rows if "_dal" in r["name"]]
        base = dal[0]["stats"]["median"] if dal else None
        print(f"**{group}**\n\n| benchmark | median | x dal's time |\n|---|---|---|")
        for r in sorted(rows, key=lambda r: r["stats"]["median"]):
            med = r["stats"]["median"]
            ratio = f"{med / base:.2f}" if base else ""
            print(f"| {r['name'].removeprefix('test_')} | {fmt_seconds(med)} | {ratio} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
