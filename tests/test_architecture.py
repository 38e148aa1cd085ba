"""The package's shape: every module imports only modules of earlier notebooks, at its top; modules stay small.

Notebook NN exports one module (nbdev writes `# %% ../nbs/NN_name.ipynb` above every exported cell), so the
notebook number is the module's place in the reading order and in the import graph."""
import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "sage_paper"


def modules() -> dict:
    "module name -> (notebook number, source)"
    out = {}
    for f in sorted(PKG.glob("*.py")):
        if f.name.startswith("_"): continue
        src = f.read_text()
        m = re.search(r"# %% \.\./nbs/(\d+)_", src)
        out[f.stem] = (int(m.group(1)) if m else None, src)
    return out


def imports(src: str) -> list:
    "(sage_paper module imported, at the top of the file?) for every import of a package module."
    found = []
    tree = ast.parse(src)
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mods = [node.module.split(".")[1]] if node.module and node.module.startswith("sage_paper.") else []
            if node.level == 1: mods = [node.module] if node.module else [a.name for a in node.names]
        elif isinstance(node, ast.Import): mods = [a.name.split(".")[1] for a in node.names if a.name.startswith("sage_paper.")]
        else: continue
        found += [(m, id(node) in top) for m in mods]
    return found


def test_every_module_comes_from_a_numbered_notebook():
    assert all(n is not None for n, _ in modules().values()), {k: n for k, (n, _) in modules().items()}


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_follow_notebook_order_and_sit_at_the_top(name):
    mods = modules()
    n, src = mods[name]
    for m, at_top in imports(src):
        assert m in mods, f"{name} imports an unknown module {m}"
        assert mods[m][0] < n or m == name, f"{name} (notebook {n:02d}) imports {m} (notebook {mods[m][0]:02d})"
        assert at_top, f"{name} imports sage_paper.{m} inside a function: import it at the top (only optional heavy packages are imported lazily)"


def test_modules_stay_small():
    sizes = {name: len(src.splitlines()) for name, (_, src) in modules().items()}
    assert sizes["generate"] <= 450, sizes["generate"]
    # "about 550", with two known exceptions to split: data.py (reads, checks and reports every kind of corpus) and
    # evaluate.py (the evaluation layer: scoring, NMSI, convergence, trials); neither may grow further
    big = {"data": 800, "evaluate": 740}
    assert all(n <= big.get(name, 600) for name, n in sizes.items()), sizes
