"""What a reader sees: no machine paths or words about how the companion is made, figures that read, formulas offline.

* the scan: README, every notebook (sources and stored outputs), every record of a run (figures/*/notebooks/) and every
  page of the built site carry no absolute path of a machine and no wording about issues, tickets or helpers;
* records: `reproduce.record_notebook` makes paths relative and drops Python warnings, on a fresh run and on a record
  tidied again; papermill's kernels start without the "running over TCP without encryption" warning;
* figures: the forest plot and the BPE figures drawn from the committed tables keep one unit and direction per panel,
  full labels, a legend and ticks that do not collide; the notebooks' stored figures are at 100 dpi or more;
* every numbered notebook says at its top how long it runs on 2 CPU cores and what data it needs;
* formulas: the TeX of the markdown becomes MathML when the site is built (tools/site.py), so the pages need no MathJax.

KNOWN lists what is still to fix in files this test does not own; each entry is a strict xfail, so the test fails as
soon as the file is fixed and the entry can go."""
import base64, html, importlib.util, json, re, struct
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from sage_paper import reproduce as R

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sage_site_reader", ROOT / "tools" / "site.py")
sage_site = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(sage_site)

# an absolute path of a machine (or the paper notes outside the repository), and wording for the people who build the companion
MACHINE_PATH = re.compile(r"(?<![\w.~-])(/work/|/home/|/root/|/Users/|/tmp/|/var/folders/|/private/var/|[A-Z]:\\\\)|\.venv/lib/|shared/PAPERS\.md")
BUILDER_WORDS = re.compile(r"\b(issues?|tickets?|helpers?)\b|sessions? that (build|test)|before this work|the project (itself )?is built", re.I)

KNOWN = {}  # file -> why it still fails the scan (each a strict xfail: remove the entry once the file is fixed)


def _texts(path:Path) -> list:
    "[(where, text)] a reader sees in a notebook (every cell's source and stored text outputs) or a text file."
    if path.suffix != ".ipynb": return [(path.name, path.read_text())]
    out = []
    for i, c in enumerate(json.loads(path.read_text())["cells"]):
        out.append((f"cell {i} ({c.get('id')}) source", "".join(c["source"])))
        for o in c.get("outputs", []):
            for k, v in [("text", o.get("text")), ("traceback", o.get("traceback")), *o.get("data", {}).items()]:
                if v is not None and (k in ("text", "traceback") or k.startswith("text/")):
                    out.append((f"cell {i} ({c.get('id')}) {o['output_type']} {k}", "\n".join(v) if isinstance(v, list) else v))
    return out


def _found(path:Path) -> list:
    return [f"{where}: ...{t[max(0, m.start() - 60):m.end() + 40]!r}"
            for where, t in _texts(path) for pat in (MACHINE_PATH, BUILDER_WORDS) for m in pat.finditer(t)]


def _reader_files() -> list:
    return [ROOT / "README.md", *sorted((ROOT / "nbs").glob("*.ipynb")), *sorted((ROOT / "nbs" / "experiments").glob("*.ipynb")),
            *sorted(ROOT.glob("figures/*/notebooks/*.ipynb"))]


def _known(rel:str) -> list:
    return [pytest.mark.xfail(strict=True, reason=KNOWN[rel])] if rel in KNOWN else []


@pytest.mark.parametrize("path", [pytest.param(p, id=str(p.relative_to(ROOT)), marks=_known(str(p.relative_to(ROOT)))) for p in _reader_files()])
def test_what_a_reader_sees_names_no_machine_path_and_no_builders(path):
    found = _found(path)
    assert not found, "\n".join(found[:10])


def test_the_scan_finds_what_it_looks_for(tmp_path):
    "The patterns catch the kinds of text the scan is for (and leave made-up paths and ordinary words alone)."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("the default model of the issue"),
                                         nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output("stream", name="stderr",
                                             text="/work/main/.venv/lib/python3.11/site-packages/miditok/x.py:1: UserWarning: w\n")]),
                                         nbformat.v4.new_code_cell('load_corpus("folder:/nonexistent/x"); p = "/no/such.mid"  # a worker issued')])
    nbformat.write(nb, tmp_path / "n.ipynb")
    found = _found(tmp_path / "n.ipynb")
    assert len(found) == 3 and "cell 0" in found[0] and all("cell 1" in f for f in found[1:]), found   # not the made-up paths, not "issued"


# -- records -----------------------------------------------------------------------------------------------------

def _executed(tmp_path:Path, clone:Path) -> Path:
    "An executed notebook as papermill leaves it when run in `clone`: absolute out_dir, warnings with temporary and venv paths."
    params = nbformat.v4.new_code_cell(f'# Parameters\nprofile = "cpu"\nout_dir = "{clone}/figures"\n')
    params.metadata["tags"] = ["injected-parameters"]
    warn = (f"/tmp/ipykernel_7006/3482740323.py:7: RuntimeWarning: invalid value encountered in scalar divide\n"
            f"  e, lo, hi = bootstrap(lambda a, b: a / b, x, y)\n"
            f"{clone}/.venv/lib/python3.11/site-packages/numpy/_core/_methods.py:142: RuntimeWarning: Mean of empty slice\n"
            f"  ret = ret.dtype.type(ret / rcount)\nfitting 3 seeds\n")
    cells = [params,
             nbformat.v4.new_code_cell('save_figure(fig, "demo", out_dir, profile)', outputs=[
                 nbformat.v4.new_output("stream", name="stderr", text=warn),
                 nbformat.v4.new_output("stream", name="stderr", text="/tmp/ipykernel_1/2.py:3: UserWarning: only this\n  warn()\n"),
                 nbformat.v4.new_output("stream", name="stdout", text=f"checkpoints -> {clone}/data/checkpoints; scratch {Path('/tmp')}/tmpab12_x/t.csv\n"),
                 nbformat.v4.new_output("execute_result", data={"text/plain": f"[PosixPath('{clone}/figures/cpu/demo.png'), PosixPath('{clone}')]"},
                                        execution_count=1)])]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "e09_demo.ipynb")
    return tmp_path / "e09_demo.ipynb"


def test_record_notebook_writes_relative_paths_and_no_warnings(tmp_path):
    clone = tmp_path / "clone"
    (clone / "figures" / "cpu").mkdir(parents=True); (clone / "figures" / "cpu" / "demo.png").write_bytes(b"png")
    dest = clone / "figures" / "cpu" / "notebooks" / "e09_demo.ipynb"
    R.record_notebook(_executed(tmp_path, clone), dest, dict(profile="cpu", device="cpu", git_sha="abc", finished="now", duration_s=3),
                      roots=[clone])
    rec = nbformat.read(dest, 4)
    assert 'out_dir = "figures"' in rec.cells[1].source
    outs = rec.cells[2].outputs
    assert [o.get("name", o["output_type"]) for o in outs] == ["stderr", "stdout", "execute_result", "display_data"]
    assert outs[0].text == "fitting 3 seeds\n"                       # the warnings went, the run's own text stayed
    assert outs[1].text == "checkpoints -> data/checkpoints; scratch <temporary folder>/t.csv\n"
    assert outs[2].data["text/plain"] == "[PosixPath('figures/cpu/demo.png'), PosixPath('.')]"
    assert outs[3].data["text/markdown"] == "![demo](../demo.png)"
    assert "relative to the repository root" in rec.cells[0].source and not _found(dest)
    # tidied again in place (how the committed records were cleaned): the same record, one header, one link
    before = dest.read_text()
    R.record_notebook(dest, dest, header=None, roots=[clone])
    assert dest.read_text() == before


def test_committed_records_keep_their_figures_and_no_warnings():
    recs = sorted(ROOT.glob("figures/*/notebooks/*.ipynb"))
    assert len(recs) >= 6
    for p in recs:
        nb = nbformat.read(p, 4)
        assert nb.cells[0].source.startswith("> **Recorded run**"), p
        stderr = "".join(o.text for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr")
        assert not re.search(r"^\S.*:\d+: \w*Warning: ", stderr, re.M), (p, stderr[:300])
        links = re.findall(r"!\[[^\]]*\]\(\.\./([^)]+)\)", p.read_text())
        assert all((p.parent.parent / l).is_file() for l in links) and len(links) == len(set(links)), (p, links)


def test_papermill_kernels_start_without_the_tcp_warning(tmp_path, capfd):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert R.run_notebook(tmp_path / "a.ipynb", {}, tmp_path / "out.ipynb", timeout=120) == ("ok", None)
    assert nbformat.read(tmp_path / "out.ipynb", 4).cells[0].outputs[0].text == "42\n"
    err = capfd.readouterr().err
    assert "without encryption" not in err, err[-500:]


# -- figures -------------------------------------------------------------------------------------------------------

def _overlap(boxes) -> bool:
    "Whether any two of the rendered boxes (matplotlib Bbox) overlap."
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_forest_plot_of_the_committed_claims_reads():
    import matplotlib; matplotlib.use("Agg")
    from sage_paper.claims import forest_plot, FOREST_PANELS, _panel_of
    L = pd.read_csv(ROOT / "figures" / "claims.csv")
    L = L[L.profile == L.profile.iloc[-1]]
    fig = forest_plot(L)
    fig.canvas.draw(); r = fig.canvas.get_renderer()
    titles = {a.get_title(loc="left").split("\n")[0]: a for a in fig.axes}
    assert set(titles) <= {v[0] for v in FOREST_PANELS.values()} and len(titles) == len(fig.axes) >= 4
    assert any("lower is better" in t for t in titles) and any("higher is better" in t for t in titles)
    decided = L[L.our_value.notna()]
    for cid, g in decided.groupby("claim_id"):   # each claim in the one panel of its unit and direction, labelled in full
        ax = titles[FOREST_PANELS[_panel_of(cid)][0]]
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert all((f"{cid}: {s}" if s else cid) in labels for s in g.scale.fillna("")), (cid, labels)
    for ax in fig.axes:
        assert ax.get_xlabel() and not _overlap([t.get_window_extent(r) for t in ax.get_yticklabels() + ax.get_xticklabels() if t.get_text()])
    assert len(fig.legends) == 1 and fig.dpi >= 100


def test_bpe_figures_of_the_committed_study_read():
    import matplotlib; matplotlib.use("Agg")
    from sage_paper.bpe_study import plot_measures, FIGURES
    df = pd.read_csv(ROOT / "figures" / "bpe_study.csv")
    for name, measures in FIGURES.items():
        fig = plot_measures(df[df.profile == "cpu"], measures, name)
        fig.canvas.draw(); r = fig.canvas.get_renderer()
        axes = [a for a in fig.axes if a.get_visible()]
        assert len(axes) == len(measures) and all(a.get_title() and a.get_ylabel() and a.get_xlabel() for a in axes), name
        for a in axes:
            lo, hi = a.get_xlim()
            ticks = [t.get_window_extent(r) for t, x in zip(a.get_xticklabels(), a.get_xticks()) if t.get_text() and lo <= x <= hi]
            assert len(ticks) >= 2 and not _overlap(ticks), (name, a.get_title())
        assert not _overlap([a.title.get_window_extent(r) for a in axes]), name   # panel titles apart
        assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) >= 3
    assert all("better" in t for t in FIGURES["bpe_quality"].values())


def _png_dpi(b64:str) -> float|None:
    "The resolution a PNG records (pHYs), in dots per inch."
    b = base64.b64decode(b64); i = 8
    while i < len(b):
        n, kind = struct.unpack(">I", b[i:i + 4])[0], b[i + 4:i + 8]
        if kind == b"pHYs":
            x, _, unit = struct.unpack(">IIB", b[i + 8:i + 17])
            return x * 0.0254 if unit == 1 else None
        if kind == b"IDAT": return None
        i += 12 + n
    return None


LOW_DPI = {"nbs/09_recurrence.ipynb": "its memory-horizon plots are drawn at dpi 65", "nbs/12_explore.ipynb": "its explorers draw at dpi 72"}

@pytest.mark.parametrize("path", [pytest.param(p, id=p.name, marks=[pytest.mark.xfail(strict=True, reason=LOW_DPI[f"nbs/{p.name}"])]
                                                if f"nbs/{p.name}" in LOW_DPI else []) for p in sorted((ROOT / "nbs").glob("*.ipynb"))])
def test_stored_figures_are_drawn_at_100_dpi_or_more(path):
    low = []
    for c in json.loads(path.read_text())["cells"]:
        for o in c.get("outputs", []):
            if png := o.get("data", {}).get("image/png"):
                dpi = _png_dpi(png if isinstance(png, str) else "".join(png))
                if dpi is None or dpi < 99.5: low.append((c.get("id"), dpi))
    assert not low, low


# -- run time and data, at the top of every notebook ----------------------------------------------------------------

NO_HEADER = {}  # notebook -> why it does not say yet

@pytest.mark.parametrize("path", [pytest.param(p, id=p.name, marks=[pytest.mark.xfail(strict=True, reason=NO_HEADER[f"nbs/{p.name}"])]
                                                if f"nbs/{p.name}" in NO_HEADER else []) for p in sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))])
def test_every_notebook_says_its_run_time_and_data_at_the_top(path):
    md = [("".join(c["source"])) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"][:2]
    top = "\n".join(md)
    assert re.search(r"Runs in about \d+ (seconds|minutes?) on 2 CPU cores", top), top[:300]
    assert re.search(r"needs no corpus|needs no download|the MIDI files the set-up fetches", top), top[:300]


def test_every_notebook_is_valid_with_an_id_on_every_cell():
    "A cell without an id is a warning for every reader of the notebook today and an error in later nbformat versions."
    for p in sorted(ROOT.glob("nbs/**/*.ipynb")):
        nb = json.loads(p.read_text())
        assert [i for i, c in enumerate(nb["cells"]) if not c.get("id")] == [], p
        nbformat.validate(nbformat.from_dict(nb))


# -- formulas ------------------------------------------------------------------------------------------------------

def test_tex_becomes_mathml():
    t = sage_site.tex_to_mathml
    assert t(r"x_{1:T}") == "<math><mrow><msub><mi>x</mi><mrow><mn>1</mn><mo>:</mo><mi>T</mi></mrow></msub></mrow></math>"
    assert t(r"\tfrac14") == '<math><mrow><mstyle displaystyle="false"><mfrac><mn>1</mn><mn>4</mn></mfrac></mstyle></mrow></math>'
    assert t(r"\text{bits per note} = \frac{a}{N \ln 2}", True) == (
        '<math display="block"><mrow><mtext>bits&#160;per&#160;note</mtext><mo>=</mo><mfrac><mrow><mi>a</mi></mrow>'
        '<mrow><mi>N</mi><mi>ln</mi><mn>2</mn></mrow></mfrac></mrow></math>')
    assert "<munder><munder data-brace" in t(r"\underbrace{s}_{\text{harmony}}")
    assert "&#124;" in t(r"|\rho_g - \rho_r|")            # no bare '|' to break a markdown table
    with pytest.raises(ValueError, match=r"\\begin is not a command"): t(r"\begin{aligned} a \end{aligned}")
    with pytest.raises(ValueError, match="unclosed"): t(r"\frac{a}{b")


def test_math_in_markdown_leaves_code_and_money_alone():
    m = sage_site.math_in_markdown
    assert m("costs $5 and $6") == "costs $5 and $6"
    assert m("`$x$` and\n```\n$$y$$\n```\n") == "`$x$` and\n```\n$$y$$\n```\n"
    assert m("so $a$ and\n\n$$b\n + c$$\n") == ("so <math><mrow><mi>a</mi></mrow></math> and\n\n"
                                                 '<math display="block"><mrow><mi>b</mi><mo>+</mo><mi>c</mi></mrow></math>\n')
    logged = []
    assert m(r"$\begin{x}$", log=logged.append) == r"`$\begin{x}$`" and logged


def test_every_formula_of_the_repository_converts():
    n = 0
    for p in [ROOT / "README.md", *sorted((ROOT / "nbs").glob("*.ipynb")), *sorted((ROOT / "nbs" / "experiments").glob("*.ipynb"))]:
        mds = [p.read_text()] if p.suffix == ".md" else ["".join(c["source"]) for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "markdown"]
        for md in mds:
            failed = []
            out = sage_site.math_in_markdown(md, log=failed.append)
            assert not failed, (p.name, failed)
            n += out.count("<math")
    assert n >= 30   # 04's NMSI and bits per note, 09's memory bytes, the lesson's arithmetic, ...


# -- the built site (the `site` fixture: conftest) -------------------------------------------------------------

def _page_text(p:Path) -> str:
    "What a page shows: its text without scripts, styles and tags."
    s = p.read_text(encoding="utf-8")
    s = re.sub(r"<(script|style)\b.*?</\1>", " ", s, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", " ", s))


def test_site_pages_name_no_machine_path_and_no_builders(site):
    known = {Path(k).stem for k in KNOWN}
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 25
    found = []
    for p in pages:
        if p.name.split(".")[0] in known: continue    # its notebook is in KNOWN (a strict xfail above)
        t = _page_text(p)
        found += [f"{p.relative_to(site)}: ...{t[max(0, m.start() - 60):m.end() + 40]!r}" for pat in (MACHINE_PATH, BUILDER_WORDS) for m in pat.finditer(t)]
    assert not found, "\n".join(found[:10])


def test_site_pages_show_formulas_as_mathml_without_mathjax(site):
    for name, n in (("04_metrics", 4), ("09_recurrence", 1), ("lesson_efficient_attention", 4)):
        page = (site / "nbs" / f"{name}.html").read_text(encoding="utf-8")
        assert page.count('<math display="block">') >= n, name
        assert "$$" not in _page_text(site / "nbs" / f"{name}.html") and "mathjax" not in page.lower(), name
