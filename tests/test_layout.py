"""The package's shape: public names, no private cross-imports, no import cycle, lazy heavy imports."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import peakloc

PACKAGE = Path(peakloc.__file__).parent


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, path.name == "__init__.py"


def _imports(name, path, is_package):
    """(imported module, imported names, at module level?) for every peakloc import of a module."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "peakloc":
                yield target, [a.name for a in node.names], id(node) in top_level
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "peakloc":
                    yield alias.name, [], id(node) in top_level


def test_no_module_imports_a_private_name_of_another():
    private = [
        f"{name} imports {target}.{imported}"
        for name, path, is_package in _modules()
        for target, names, _ in _imports(name, path, is_package)
        for imported in names
        if imported.startswith("_") and imported != "__version__"
    ]
    private += [
        f"{name} imports {target}"
        for name, path, is_package in _modules()
        for target, _, _ in _imports(name, path, is_package)
        if any(part.startswith("_") for part in target.split("."))
    ]
    assert private == []


def _cycles(inside_functions: bool, prefix: str = "peakloc") -> list[list[str]]:
    """Import cycles among the modules under ``prefix``: module-level imports, or every import."""
    modules = {name for name, _, _ in _modules()}
    graph = {}
    for name, path, is_package in _modules():
        edges = set()
        for target, names, top in _imports(name, path, is_package):
            if not (top or inside_functions):
                continue
            for imported in names or [""]:
                full = f"{target}.{imported}" if imported else target
                edges.add(full if full in modules else target)
        if name.startswith(prefix):
            graph[name] = {e for e in edges if e in modules and e != name and e.startswith(prefix)}
    state, cycle = {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle.append(trail + [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycle


def test_module_level_imports_have_no_cycle():
    assert _cycles(inside_functions=False) == []


def test_ops_have_no_import_cycle_even_through_imports_inside_functions():
    # A module that runs in slabs (streaming) uses the in-memory operations, never the other way round; the
    # single-spot fit is the group fit's building block. An import deferred into a function is still an edge.
    assert _cycles(inside_functions=True, prefix="peakloc.ops") == []


@pytest.mark.parametrize(
    "name", ["argmax", "soft_argmax", "find_peaks", "refine", "smooth", "pixel_to_normalized", "normalized_to_pixel"]
)
def test_every_public_function_works_from_the_top_level(name):
    assert callable(getattr(peakloc, name)) and name in peakloc.__all__


def test_every_name_in_all_resolves():
    for name in peakloc.__all__:
        if name != "SoftArgmax":  # needs torch: tested in test_nn.py
            getattr(peakloc, name)


@pytest.mark.parametrize(
    "code",
    [
        "import peakloc",
        "import peakloc.cli; peakloc.cli.main(['find', '--help'])",
        "import peakloc, numpy as np; peakloc.soft_argmax(np.eye(4)); peakloc.refine(np.eye(5), [[2, 2]])",
    ],
)
def test_numpy_paths_never_import_torch(code):
    check = f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch'"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_a_gaussian_fit_of_isolated_peaks_imports_no_scipy():
    # Importing scipy.special or scipy.sparse takes 0.1-0.2 s of every process of a folder run: a third
    # of a default run over 300 small PNGs. The fit needs them only to join crowded spots into groups.
    code = (
        "import sys, numpy as np, peakloc\n"
        "y, x = np.mgrid[:32, :32]\n"
        "heat = np.exp(-((x - 9.3) ** 2 + (y - 20.6) ** 2) / 8) + np.exp(-((x - 24) ** 2 + (y - 8) ** 2) / 8)\n"
        "peakloc.find_peaks(heat, 2, num_peaks=2)\n"
        "peakloc.refine(heat, [[20, 9], [8, 24]], method='gaussian')\n"
        "assert not [m for m in sys.modules if m.startswith('scipy')], sorted(sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_a_run_over_png_and_npy_files_imports_none_of_the_optional_readers(tmp_path):
    # Start-up stays fast: zarr, h5py and Dask load only for the inputs or options that need them.
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.eye(8, dtype=np.uint8) * 200)
    np.save(tmp_path / "b.npy", np.eye(8))
    code = (
        "import sys\n"
        "from peakloc.cli import main\n"
        "try:\n"
        f"    main(['find', {str(tmp_path)!r}, '-q', '-o', {str(tmp_path / 'out.csv')!r}])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = [m for m in ('zarr', 'h5py', 'dask', 'distributed', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
