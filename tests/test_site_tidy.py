"tools/site.py's reading view of a notebook (no browser needed): what nbdev's docs would show."
import importlib.util
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sage_site_tidy", ROOT / "tools" / "site.py")
sage_site = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(sage_site)
new_code, new_md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell


def test_tidy_drops_hidden_cells_and_strips_directives():
    nb = nbformat.v4.new_notebook(cells=[
        new_code("#| default_exp data"), new_md("# Title\n\n#| not a directive in markdown"),
        new_code("#| hide\nfrom fastcore.test import test_eq"), new_code("#|hide\nx = 1"),
        new_code("#| export\n#| eval: false\ndef f(x):\n    #| a comment inside the body stays\n    return x"),
        new_code("f(2)"), new_code("# an ordinary comment\ny = 2")])
    out = sage_site.tidy(nb)
    assert [c.source for c in out.cells] == [
        "# Title\n\n#| not a directive in markdown",
        "def f(x):\n    #| a comment inside the body stays\n    return x", "f(2)", "# an ordinary comment\ny = 2"]


def test_tidy_on_every_notebook_leaves_no_directive_and_keeps_every_output_of_shown_cells():
    for p in sage_site.notebooks():
        nb = nbformat.read(p, as_version=4)
        shown = [c for c in nb.cells if not (c.cell_type == "code" and any(
            (m := sage_site.DIRECTIVE.match(l)) and m.group(1) in sage_site.HIDDEN for l in c.source.splitlines()[:4]))]
        n_out = sum(len(c.get("outputs", [])) for c in shown)
        t = sage_site.tidy(nb)
        assert not [c.source[:40] for c in t.cells if c.cell_type == "code" and sage_site.DIRECTIVE.match(c.source)], p.name
        assert sum(len(c.get("outputs", [])) for c in t.cells) == n_out, p.name
        assert len(t.cells) >= 5, p.name


def test_tidy_replaces_live_widget_outputs_with_a_note():
    nb = nbformat.read(ROOT / "nbs" / "12_explore.ipynb", as_version=4)
    n_widgets = sum(sage_site.WIDGET in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert n_widgets >= 3   # the stored outputs of the explorers
    t = sage_site.tidy(nb)
    outs = [o for c in t.cells for o in c.get("outputs", [])]
    assert not any(sage_site.WIDGET in o.get("data", {}) for o in outs)
    assert sum(o.get("data", {}).get("text/html") == sage_site.WIDGET_NOTE for o in outs) == n_widgets
