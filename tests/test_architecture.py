"""The walls of docs/design.md ("Which way the imports run", "Layout"), read from the sources.

dal_core includes no torch; only dal.ops touches dal._C; the models know nothing of the engine,
the data loaders or the CLI; dal.data knows nothing of the engine; the CLI imports only the
public API; every op has its file in every layer, under one stem.
"""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "dal"
# op -> its stem in every layer
STEMS = {"onehot_st": "onehot", "sobel": "sobel", "canny": "canny", "median_filter": "median",
         "residual_score": "residual", "binary_erode": "morphology", "binary_dilate": "morphology"}


def imports_of(path: Path) -> set[str]:
    """Every module a Python file imports (``from a.b import c`` gives a.b and a.b.c), at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def includes_of(path: Path) -> list[str]:
    return re.findall(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', path.read_text(), flags=re.M)


def includes_through_local_headers(path: Path, seen: set[Path] | None = None) -> set[str]:
    """What a source file includes, directly or through the headers beside it (csrc's own)."""
    seen = seen if seen is not None else set()
    found = set()
    for name in includes_of(path):
        found.add(name)
        local = (path.parent / name).resolve()
        if local.is_file() and local not in seen:
            seen.add(local)
            found |= includes_through_local_headers(local, seen)
    return found


def test_the_walls_are_found():
    """The readers below see what they must (a reader that finds nothing would pass any wall)."""
    assert "dal.engine.train.train" not in imports_of(PACKAGE / "cli.py")
    assert "dal.ops._extension" in imports_of(PACKAGE / "ops" / "__init__.py")
    assert "torch/library.h" in includes_of(ROOT / "csrc" / "ops.cpp")


@pytest.mark.parametrize("path", sorted((ROOT / "dal_core").rglob("*.[hc]*")), ids=lambda p: p.name)
def test_dal_core_includes_no_torch(path):
    bad = [name for name in includes_of(path) if name.split("/")[0] in ("torch", "ATen", "c10", "Python.h", "pybind11")]
    assert not bad, f"{path.relative_to(ROOT)} includes {bad}"


@pytest.mark.parametrize("path", [p for p in modules(PACKAGE) if PACKAGE / "ops" not in p.parents],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_dal_ops_touches_the_extension(path):
    bad = {m for m in imports_of(path) if m in ("dal._C", "dal.ops._extension") or m.startswith("dal.ops.reference")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules(PACKAGE / "models"), ids=lambda p: p.name)
def test_models_know_nothing_of_the_engine_data_or_cli(path):
    bad = {m for m in imports_of(path) if m.startswith(("dal.engine", "dal.data", "dal.cli", "dal.api"))}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules(PACKAGE / "data"), ids=lambda p: p.name)
def test_data_knows_nothing_of_the_engine(path):
    bad = {m for m in imports_of(path) if m.startswith(("dal.engine", "dal.cli", "dal.api"))}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_cli_stands_on_the_public_api():
    import dal

    allowed = {"dal", "dal.errors", "dal.ops", "dal.ops.build_info"} | {f"dal.{name}" for name in dal.__all__}
    bad = {m for m in imports_of(PACKAGE / "cli.py")
           if m.split(".")[0] == "dal" and m not in allowed and not m.startswith("dal.errors.")}
    assert not bad, f"cli.py imports {sorted(bad)}"


def test_every_op_has_one_stem_in_every_layer():
    from dal import ops

    assert set(ops.op_names()) - {"onehot_st_backward", "sobel_backward"} <= set(STEMS) or not ops.op_names()
    for stem in sorted(set(STEMS.values())):
        for layer in (f"csrc/cpu/{stem}_cpu.cpp", f"csrc/cuda/{stem}_cuda.cu", f"python/dal/ops/{stem}.py",
                      f"python/dal/ops/reference/{stem}.py", f"tests/ops/test_{stem}.py", f"benchmarks/bench_{stem}.py"):
            assert (ROOT / layer).is_file(), f"op stem {stem}: no {layer}"
    for op, stem in STEMS.items():
        assert getattr(ops, op).__module__ == f"dal.ops.{stem}", op


def test_per_voxel_math_lives_in_dal_core():
    """Every CPU and CUDA kernel file includes its stem's dal_core header (itself or through its
    own helper headers), where the stem has one."""
    for stem in sorted(set(STEMS.values())):
        header = ROOT / "dal_core" / "include" / "dal" / f"{stem}.h"
        if not header.is_file():
            continue
        for kernel in (ROOT / "csrc" / "cpu" / f"{stem}_cpu.cpp", ROOT / "csrc" / "cuda" / f"{stem}_cuda.cu"):
            assert f"dal/{stem}.h" in includes_through_local_headers(kernel), \
                f"{kernel.relative_to(ROOT)} does not include dal/{stem}.h"
