"""The rendered companion: a static HTML site of the notebooks, browsable offline (`make site` writes _site/).

`python tools/site.py [--out DIR] [--timeout S]` renders, with nbconvert's HTML exporter (lab template):
  * index.html: README.md (which is rendered from nbs/index.ipynb) with a navigation list of every page;
  * nbs/NN_*.html and nbs/experiments/*.html: one page per notebook, its stored outputs as they are in git,
    but an experiment notebook shows the record of its largest recorded run (figures/<profile>/notebooks/, written
    by `sage_paper.reproduce`: parameters, tables, the figures that run saved; gpu, then cpu-long, then cpu), with
    a page per other recorded profile linked at its top;
    except the notebooks in EXECUTE (nbs/11_listen.ipynb keeps no audio in git): those are executed first
    (ExecutePreprocessor, cwd nbs/) so that their pages embed the audio players as data: URIs;
  * figures/: a copy of the repository's figures/, so that the README's image links work.
Pages show what nbdev's docs would (`tidy`): `#| hide` and `#| default_exp` cells are left out, and the `#|`
directives of the other cells are removed from the code shown.
Links to .ipynb files become links to their pages. Images and audio are embedded or copied: nothing of
them is fetched from the internet (the lab template still names CDNs for MathJax and require.js, which
only typeset formulas)."""
import argparse, html, os, re, shutil, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXECUTE = ("11_listen.ipynb",)  # notebooks whose outputs are not kept in git: executed for their pages
MARKER = ".sage_paper_site"    # marks a folder this script wrote (and may therefore replace)
RECORDS = ("gpu", "cpu-long", "cpu")  # an experiment page shows the first of these profiles that recorded a run


def notebooks(root:Path=ROOT) -> list:
    "The notebooks that get a page: nbs/*.ipynb (but index.ipynb, which is the README) and nbs/experiments/*.ipynb."
    nbs = root / "nbs"
    return [p for p in sorted(nbs.glob("*.ipynb")) if p.name != "index.ipynb"] + sorted((nbs / "experiments").glob("*.ipynb"))


DIRECTIVE = re.compile(r"^\s*#\s*\|\s*([\w-]+)")   # an nbdev/Quarto cell directive: `#| export`, `#|hide`, `#| eval: false`
HIDDEN = {"hide", "default_exp"}                           # cells nbdev leaves out of its pages
WIDGET = "application/vnd.jupyter.widget-view+json"        # a live widget: nothing to show without a kernel
WIDGET_NOTE = ('<p class="sage-widget-note" style="border-left:3px solid #4c72b0;padding:0.3em 0.8em;background:#f4f6fa">'
               '<b>Interactive explorer.</b> It needs a running kernel: open this notebook in JupyterLab '
               '(<code>.venv/bin/jupyter lab nbs/12_explore.ipynb</code>) to use it. The cells above call the functions it is built on.</p>')


def tidy(nb):
    "nbdev's reading view of `nb`: `#| hide` / `#| default_exp` cells dropped, directives stripped, live widgets replaced by a note."
    cells = []
    for c in nb.cells:
        if c.cell_type != "code": cells.append(c); continue
        lines, found = c.source.splitlines(), set()
        while lines and (m := DIRECTIVE.match(lines[0])):
            found.add(m.group(1)); lines.pop(0)
        if found & HIDDEN: continue
        if found: c.source = "\n".join(lines).strip("\n")
        for o in c.get("outputs", []):
            if WIDGET in o.get("data", {}): o["data"] = {"text/html": WIDGET_NOTE, "text/plain": "(an ipywidgets explorer: run the notebook in JupyterLab)"}
        cells.append(c)
    nb.cells = cells
    return nb


def records(p:Path, root:Path=ROOT) -> list:
    "[(profile, record path)] of an experiment notebook's recorded runs, preferred first (none for other notebooks)."
    if p.parent.name != "experiments": return []
    return [(prof, r) for prof in RECORDS if (r := root / "figures" / prof / "notebooks" / p.name).is_file()]


def as_recorded(nb, profile:str, others:list, page:str):
    "A record made readable at `page` (a path inside the site): its figure links point at the site's figures/<profile>/, other profiles linked."
    to_figs = os.path.relpath(f"figures/{profile}", os.path.dirname(page))
    for c in nb.cells:
        for o in c.get("outputs", []):
            md = o.get("data", {}).get("text/markdown")
            if md: o["data"]["text/markdown"] = md.replace("](../", f"]({to_figs}/")
    if others:
        links = ", ".join(f"[{prof}]({Path(page).stem}.{prof}.html)" for prof in others)
        nb.cells[0].source += f" The same notebook as recorded by the other profiles: {links}."
    return nb


def _unrecorded(nb):
    import nbformat
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("> **No recorded run yet.** This page shows the notebook as stored, with its "
        "small defaults; `python -m sage_paper.reproduce --profile cpu` records a run (figures/cpu/notebooks/)."))
    return nb


def title_of(nb) -> str:
    "The first level-1 heading of a notebook's markdown, or ''."
    for c in nb.cells:
        if c.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", c.source, re.M)
            if m: return m.group(1).strip()
    return ""


def execute(nb, path:Path, timeout:int):
    "Run `nb` in a fresh python3 kernel with the notebook's folder as working directory."
    from nbconvert.preprocessors import ExecutePreprocessor
    old = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures inline even where the caller set Agg (make test)
    try: ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(path.parent)}})
    finally:
        if old is None: os.environ.pop("MPLBACKEND", None)
        else: os.environ["MPLBACKEND"] = old
    return nb


def _nav(pages:list, here:str) -> str:
    "The navigation list (links relative to the page at `here`, a path inside the site)."
    rel = lambda target: os.path.relpath(target, os.path.dirname(here) or ".")
    items = [f'<li><a href="{html.escape(rel("index.html"))}">index (README)</a></li>']
    for href, name, title in pages:
        label = f"{name}: {title}" if title else name
        cur = ' aria-current="page"' if href == here else ""
        items.append(f'<li><a href="{html.escape(rel(href))}"{cur}>{html.escape(label)}</a></li>')
    return ('<nav id="site-nav" style="padding:0.5em 2em;border-bottom:1px solid #ddd;font-size:0.9em">'
            '<details' + (' open' if here == "index.html" else "") + '><summary>sage_paper: all pages</summary><ul>'
            + "".join(items) + "</ul></details></nav>")


def _finish(body:str, nav:str) -> str:
    "Insert the navigation after <body ...> and point links to .ipynb files at their pages."
    body = re.sub(r'(href="[^"#:]+?)\.ipynb([#"])', r"\1.html\2", body)
    return re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, body, count=1)


def build(out:Path=ROOT / "_site", timeout:int=600, root:Path=ROOT, log=print) -> Path:
    "Write the site into `out` (replaced if this script wrote it before); returns the path of its index.html."
    import nbformat
    from nbconvert import HTMLExporter
    out = Path(out)
    if out.exists():
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise FileExistsError(f"{out} exists and was not written by tools/site.py: not replacing it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by tools/site.py\n")
    t0 = time.time()
    exporter = HTMLExporter(template_name="lab")
    srcs = notebooks(root)
    nbs = {p: nbformat.read(p, as_version=4) for p in srcs}
    pages = [(p.relative_to(root).with_suffix(".html").as_posix(), p.stem, title_of(nb)) for p, nb in nbs.items()]
    for (href, name, _), (p, nb) in zip(pages, nbs.items()):
        t = time.time()
        if p.name in EXECUTE:
            nb = execute(nb, p, timeout)
            if not any("<audio" in str(o.get("data", {}).get("text/html", "")) for c in nb.cells for o in c.get("outputs", [])):
                raise RuntimeError(f"{p.name}: executed, but no output holds an <audio> player")
        versions = [(href, nb)]
        if recs := records(p, root):
            versions = [(href if i == 0 else href[:-len(".html")] + f".{prof}.html",
                         as_recorded(nbformat.read(r, as_version=4), prof, [q for q, _ in recs[1:]] if i == 0 else [], href))
                        for i, (prof, r) in enumerate(recs)]
        elif p.parent.name == "experiments": versions = [(href, _unrecorded(nb))]
        for page, v in versions:
            body, _ = exporter.from_notebook_node(tidy(v), resources={"metadata": {"name": name}})
            dest = out / page
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(_finish(body, _nav(pages, href)), encoding="utf-8")
        log(f"site: {href} ({'executed, ' if p.name in EXECUTE else ''}{'record of ' + recs[0][0] + ', ' if recs else ''}{time.time() - t:.1f} s)")
    readme = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell((root / "README.md").read_text())])
    body, _ = exporter.from_notebook_node(readme, resources={"metadata": {"name": "sage_paper"}})
    (out / "index.html").write_text(_finish(body, _nav(pages, "index.html")), encoding="utf-8")
    if (root / "figures").is_dir(): shutil.copytree(root / "figures", out / "figures")
    log(f"site: {len(pages) + 1} pages and figures/ in {out} ({time.time() - t0:.0f} s); open {out / 'index.html'}")
    return out / "index.html"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "_site", help="site folder (default: _site/)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell of an executed notebook")
    a = ap.parse_args()
    try: build(a.out, a.timeout)
    except Exception as e: sys.exit(f"site: {type(e).__name__}: {e}")
