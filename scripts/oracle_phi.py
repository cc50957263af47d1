"""What a perfect pseudo-healthy image would score on a `dal synth` test set: each lesion case made
again with its healthy twin (the same subject and every random draw, without the lesion), the
one-sided residual against that twin median-filtered inside the eroded brain as the score is, and
the mean AP of each contrast x lesion cell for each median window. An upper bound on what any PHI
can reach with a window: the gap between it and a model's cell is the model's PHI (or the window).

    python scripts/oracle_phi.py eval-synth [--windows 2,5,10] [--model CKPT]
    python scripts/oracle_phi.py eval-real --anatomy $ITK/KmeansTest_T1UCharRaw.nii.gz \\
        --anatomy-mask $ITK/KmeansTest_T1RawSkullStrip.nii.gz

Scored as `dal evaluate` scores, in the checkpoint's model space (registered to MNI152 where it
is, with the case's brain mask), the label brought there by nearest neighbour; the scan and its
twin share the scan's registration and intensity scale. A window of 2 mm is one voxel of the
shipped model space: no median.
"""
import argparse
import collections
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from dal.data.anatomy import load_anatomy
from dal.data.io import Scan
from dal.data.preprocess import Preprocessor
from dal.data.registration import register_to_mni
from dal.data.synthetic import SYNTH_SHAPE, SYNTH_SPACING, generate_case
from dal.engine.infer import Detector
from dal.engine.scoring import LESION_SIGN, erosion_voxels, median_kernel_voxels
from dal.metrics import average_precision
from dal.ops import residual_score


def twin_scores(preprocessor: Preprocessor, case, contrast: str, windows: list[float]) -> list[float]:
    """AP of the residual against the healthy twin at each window (mm), in model space."""
    scan = Scan(case.images[contrast], case.affine, None)
    registration = register_to_mni(scan, case.mask) if preprocessor.config.register else None
    done = preprocessor.forward(scan, case.mask, registration)
    twin = preprocessor.forward(Scan(case.healthy[contrast], case.affine, None), case.mask, registration)
    healthy = twin.image * (done.state.scale / twin.state.scale)  # on the scan's own intensity scale
    brain = done.mask
    scale = np.median(np.abs(done.image - np.median(done.image[brain]))[brain]) or 1.0
    residual = np.clip(LESION_SIGN[contrast] * (done.image - healthy), 0, None).astype(np.float32) / scale
    residual = torch.from_numpy(residual)[None, None]
    mask = torch.from_numpy(brain.astype(np.float32))[None, None]
    label = torch.from_numpy(preprocessor.to_model(case.label.astype(np.uint8), done.state, "nearest") > 0)
    spacing = preprocessor.config.spacing
    return [average_precision(residual_score(residual, torch.zeros_like(residual), mask, median_kernel_voxels(mm, spacing),
                                             erosion_voxels(2.0, spacing))[0, 0], label, torch.from_numpy(brain))
            for mm in windows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a folder written by dal synth (its manifest.json)")
    parser.add_argument("--windows", default="2,5,10", help="median windows in mm, comma-separated")
    parser.add_argument("--model", default=None, help="the checkpoint whose model space is scored (default: the shipped one)")
    parser.add_argument("--anatomy", type=Path, help="the real scan the set was made from (dal synth --anatomy)")
    parser.add_argument("--anatomy-mask", type=Path, help="its brain mask (dal synth --anatomy-mask)")
    args = parser.parse_args()
    manifest = json.loads((args.data / "manifest.json").read_text())
    if "anatomy" in manifest and args.anatomy is None:
        parser.error(f"{args.data} was made from a real scan ({manifest['anatomy']['name']}): give it with --anatomy")
    anatomy = load_anatomy(args.anatomy, mask=args.anatomy_mask) if args.anatomy else None
    preprocessor = Detector.load(args.model).preprocessor
    grid = {} if anatomy else {"spacing": SYNTH_SPACING, "shape": SYNTH_SHAPE}
    windows = [float(w) for w in args.windows.split(",")]
    cells = collections.defaultdict(list)
    for entry in manifest["cases"]:
        if entry["lesion"] == "none":
            continue
        contrasts = tuple(c for c in manifest["contrasts"])
        case = generate_case(tuple(entry["seed"]), contrasts, entry["lesion"], anatomy=anatomy, return_healthy=True,
                             **grid)
        for contrast in contrasts:
            stored = np.asarray(nib.load(str(args.data / entry["files"][contrast])).dataobj, dtype=np.float32)
            if stored.shape != case.images[contrast].shape or np.abs(stored - case.images[contrast]).max() > 1.0:
                raise SystemExit(f"{args.data / entry['files'][contrast]}: not what this generator makes from its "
                                 "seed (another generator version, or another --anatomy)")
            cells[(contrast, entry["lesion"])].append(twin_scores(preprocessor, case, contrast, windows))
        print(f"{entry['id']} ({entry['lesion']}) done", flush=True)
    print("| cell | " + " | ".join(f"{w:g} mm" for w in windows) + " |")
    print("|---|" + "---|" * len(windows))
    for (contrast, lesion), aps in sorted(cells.items()):
        print(f"| {contrast} {lesion} | " + " | ".join(f"{a:.3f}" for a in np.mean(aps, axis=0)) + " |")
    means = np.mean([a for aps in cells.values() for a in aps], axis=0)
    print("| mean | " + " | ".join(f"{a:.3f}" for a in means) + " |")


if __name__ == "__main__":
    main()
