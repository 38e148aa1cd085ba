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
Links to .ipynb files become links to their pages. Images and audio are embedded or copied, and formulas are
written as MathML when the site is built (`math_in_markdown`), which the browser draws itself: the pages load
no MathJax, and nothing of what they show is fetched from the internet (the lab template still names a CDN for
require.js, which only interactive widgets would use)."""
import argparse, html, os, re, shutil, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXECUTE = ("11_listen.ipynb",)  # notebooks whose outputs are not kept in git: executed for their pages
MARKER = ".sage_paper_site"    # marks a folder this script wrote (and may therefore replace)
RECORDS = ("gpu", "cpu-long", "cpu")  # an experiment page shows the first of these profiles that recorded a run
# the lab page without its MathJax script (formulas are MathML already, see `math_in_markdown`)
PAGE = "{%- extends 'index.html.j2' -%}\n{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}\n"


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


# -- math: the TeX of the markdown becomes MathML when the site is built, which browsers draw themselves (no MathJax, no CDN)
MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$\w])\$(?![\s$])([^$\n]+?)(?<![\s\\])\$(?![\w$])", re.S)
CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)    # code is left as it is
_SYMBOLS = {"cdot": "⋅", "times": "×", "div": "÷", "in": "∈", "notin": "∉", "mid": "∣", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥",
            "ne": "≠", "neq": "≠", "approx": "≈", "sim": "∼", "equiv": "≡", "pm": "±", "to": "→", "rightarrow": "→", "leftarrow": "←",
            "Rightarrow": "⇒", "infty": "∞", "sum": "∑", "prod": "∏", "int": "∫", "partial": "∂", "nabla": "∇", "ldots": "…", "dots": "…",
            "cdots": "⋯", "lVert": "‖", "rVert": "‖", "Vert": "‖", "|": "‖", "lvert": "|", "rvert": "|", "vert": "|", "lfloor": "⌊",
            "rfloor": "⌋", "lceil": "⌈", "rceil": "⌉", "langle": "⟨", "rangle": "⟩", "{": "{", "}": "}", "%": "%", "#": "#", "&": "&",
            "_": "_", "$": "$", "setminus": "∖", "cup": "∪", "cap": "∩", "subset": "⊂", "subseteq": "⊆", "forall": "∀", "exists": "∃",
            "propto": "∝", "ll": "≪", "gg": "≫", "circ": "∘", "ast": "∗", "prime": "′", "log2": "log₂"}
_GREEK = dict(zip("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi pi rho sigma tau upsilon "
                  "phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Phi Psi Omega".split(), "αβγδϵεζηθϑικλμνξπρστυϕφχψωΓΔΘΛΞΠΣΦΨΩ"))
_FUNCS = {"ln", "log", "exp", "max", "min", "cos", "sin", "tan", "arg", "det", "dim", "lim", "sup", "inf"}
_SPACES = {",": "0.1667em", ":": "0.2222em", ";": "0.2778em", " ": "0.25em", "quad": "1em", "qquad": "2em", "!": "0em", "~": "0.25em"}
_BIG = {"big": "1.2em", "Big": "1.6em", "bigg": "2.1em", "Bigg": "2.6em"}
_TEXT = {"text": "mtext", "textrm": "mtext", "textit": "mtext", "textbf": "mtext", "mathrm": "mi", "operatorname": "mi", "mathit": "mi",
         "mathbf": "mi", "mathsf": "mi", "mathtt": "mi"}


def _esc(s:str) -> str:
    "Text for MathML inside markdown: HTML-escaped, and nothing that markdown would read as emphasis or code."
    s = html.escape(s, quote=True)
    for ch in "*_`\\|[]$":
        s = s.replace(ch, f"&#{ord(ch)};")
    return s


class _TeX:
    "A small TeX-math reader (the subset these notebooks write) that writes MathML Core."
    def __init__(self, src:str, display:bool):
        self.src, self.display = src, display
        self.toks = re.findall(r"\\[A-Za-z]+|\\.|\d+(?:\.\d+)?|\s+|.", src, re.S)
        self.i = 0

    def fail(self, why:str): raise ValueError(f"TeX {self.src!r}: {why}")
    def peek(self):
        while self.i < len(self.toks) and self.toks[self.i].isspace(): self.i += 1
        return self.toks[self.i] if self.i < len(self.toks) else None
    def next(self):
        t = self.peek()
        if t is None: self.fail("ends too early")
        self.i += 1; return t

    def raw_group(self) -> str:
        "The text of a {...} argument as written (for \\text and friends)."
        if self.peek() != "{": return self.next()
        self.i += 1; depth, out = 1, []
        while self.i < len(self.toks):
            t = self.toks[self.i]; self.i += 1
            depth += (t == "{") - (t == "}")
            if depth == 0: return "".join(out)
            out.append(t)
        self.fail("an unclosed {")

    def arg(self) -> str:
        "One argument: a {group} or a single atom (one digit of a number: `\\tfrac14` is 1 over 4)."
        t = self.peek()
        if t is not None and t.isdigit() and len(t) > 1:
            self.toks[self.i] = t[1:]
            return f"<mn>{t[0]}</mn>"
        return self.atom()

    def expr(self) -> list:
        "Atoms up to a closing brace or the end, with their sub- and superscripts attached."
        items = []
        while (t := self.peek()) is not None and t != "}":
            if t in ("^", "_"):
                base = items.pop() if items else "<mrow></mrow>"
                sub = sup = None
                while (s := self.peek()) in ("^", "_"):
                    self.i += 1; a = self.arg()
                    if s == "_": sub = a
                    else: sup = a
                if base.startswith("<munder data-brace") and sub: items.append(f"<munder>{base}{sub}</munder>"); continue
                under = self.display and base.startswith("<mo largeop")
                tag = ("munderover" if under else "msubsup") if sub and sup else ("munder" if under else "msub") if sub else ("mover" if under else "msup")
                items.append(f"<{tag}>{base}{sub or ''}{sup or ''}</{tag}>")
            else: items.append(self.atom())
        return items

    def atom(self) -> str:
        t = self.next()
        if t == "{":
            inner = self.expr()
            if self.peek() != "}": self.fail("an unclosed {")
            self.i += 1
            return "<mrow>" + "".join(inner) + "</mrow>"
        if t.startswith("\\"): return self.command(t[1:])
        if t[0].isdigit(): return f"<mn>{t}</mn>"
        if t.isalpha(): return f"<mi>{_esc(t)}</mi>"
        if t == "'": return "<mo>′</mo>"
        if t == "~": return f'<mspace width="{_SPACES["~"]}"></mspace>'
        if t in "&": return ""   # alignment marks: ignored
        return f"<mo>{_esc(t)}</mo>"

    def command(self, c:str) -> str:
        if c in ("frac", "dfrac", "tfrac"):
            f = f"<mfrac>{self.arg()}{self.arg()}</mfrac>"
            return f if c == "frac" else f'<mstyle displaystyle="{str(c == "dfrac").lower()}">{f}</mstyle>'
        if c == "sqrt": return f"<msqrt>{self.arg()}</msqrt>"
        if c in _TEXT:
            words = self.raw_group()
            if _TEXT[c] == "mtext": return f"<mtext>{_esc(words).replace(' ', '&#160;')}</mtext>"
            style = ' style="font-weight:bold"' if c == "mathbf" else ""
            variant = "" if c == "mathit" else ' mathvariant="normal"'
            return f"<mi{variant}{style}>{_esc(words)}</mi>"
        if c in ("left", "right"):
            d = self.next(); d = "" if d == "." else _SYMBOLS.get(d[1:], d[1:]) if d.startswith("\\") else d
            return f'<mo fence="true">{_esc(d)}</mo>' if d else ""
        if (size := _BIG.get(c.removesuffix("l").removesuffix("r"))) is not None:
            d = self.next(); d = _SYMBOLS.get(d[1:], d[1:]) if d.startswith("\\") else d
            return f'<mo stretchy="true" symmetric="true" minsize="{size}" maxsize="{size}">{_esc(d)}</mo>'
        if c in ("underbrace", "overbrace"):
            inner = self.arg()
            return (f'<munder data-brace="1">{inner}<mo stretchy="true">⏟</mo></munder>' if c == "underbrace"
                    else f'<mover data-brace="1">{inner}<mo stretchy="true">⏞</mo></mover>')
        if c in ("hat", "bar", "tilde", "vec", "dot", "overline"):
            mark = {"hat": "^", "bar": "¯", "tilde": "~", "vec": "→", "dot": "˙", "overline": "¯"}[c]
            return f'<mover accent="true">{self.arg()}<mo>{mark}</mo></mover>'
        if c in _SPACES: return f'<mspace width="{_SPACES[c]}"></mspace>'
        if c in _GREEK: return f"<mi>{_GREEK[c]}</mi>"
        if c in _FUNCS: return f"<mi>{c}</mi>"
        if c in ("sum", "prod", "int"): return f'<mo largeop="true">{_SYMBOLS[c]}</mo>'
        if c in _SYMBOLS: return f"<mo>{_esc(_SYMBOLS[c])}</mo>"
        if c == "\\": return ""
        self.fail(f"\\{c} is not a command this site knows")

    def mathml(self) -> str:
        inner = self.expr()
        if self.peek() is not None: self.fail("an unmatched }")
        return (f'<math display="block">' if self.display else "<math>") + "<mrow>" + "".join(inner) + "</mrow></math>"


def tex_to_mathml(tex:str, display:bool=False) -> str:
    "One TeX formula as MathML (raises ValueError on TeX this site does not know)."
    return _TeX(tex, display).mathml()


def math_in_markdown(md:str, log=print) -> str:
    "Markdown with every $...$ and $$...$$ outside code turned into MathML; a formula that cannot be converted stays as TeX, in code."
    def one(m):
        tex, display = (m.group(1), True) if m.group(1) is not None else (m.group(2), False)
        try: return tex_to_mathml(tex, display)
        except ValueError as e:
            log(f"site: {e}; left as TeX")
            return f"`{m.group(0)}`"
    return "".join(part if i % 2 else MATH.sub(one, part) for i, part in enumerate(CODE.split(md)))


def with_math(nb, log=print):
    "`nb` with the formulas of its markdown cells written as MathML."
    for c in nb.cells:
        if c.cell_type == "markdown": c.source = math_in_markdown(c.source, log)
    return nb


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
    import zmq
    from traitlets.config import Config
    # the kernel's sockets encrypted where libzmq can (CurveZMQ keys from the kernel manager): no "running over TCP without encryption" warning
    enc = Config({"KernelManager": {"transport_encryption": "auto" if zmq.has("curve") else "disabled"}})
    try: ExecutePreprocessor(timeout=timeout, kernel_name="python3", config=enc).preprocess(nb, {"metadata": {"path": str(path.parent)}})
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


def build(out:Path=ROOT / "_site", timeout:int=600, root:Path=ROOT, log=print, execute_names=EXECUTE) -> Path:
    "Write the site into `out` (replaced if this script wrote it before); returns the path of its index.html."
    import jinja2, nbformat
    from nbconvert import HTMLExporter
    out = Path(out)
    if out.exists():
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise FileExistsError(f"{out} exists and was not written by tools/site.py: not replacing it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by tools/site.py\n")
    t0 = time.time()
    exporter = HTMLExporter(template_name="lab", extra_loaders=[jinja2.DictLoader({"sage_page.html.j2": PAGE})], template_file="sage_page.html.j2")
    srcs = notebooks(root)
    nbs = {p: nbformat.read(p, as_version=4) for p in srcs}
    pages = [(p.relative_to(root).with_suffix(".html").as_posix(), p.stem, title_of(nb)) for p, nb in nbs.items()]
    for (href, name, _), (p, nb) in zip(pages, nbs.items()):
        t = time.time()
        if p.name in execute_names:
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
            body, _ = exporter.from_notebook_node(with_math(tidy(v), log), resources={"metadata": {"name": name}})
            dest = out / page
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(_finish(body, _nav(pages, href)), encoding="utf-8")
        log(f"site: {href} ({'executed, ' if p.name in execute_names else ''}{'record of ' + recs[0][0] + ', ' if recs else ''}{time.time() - t:.1f} s)")
    readme = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(math_in_markdown((root / "README.md").read_text(), log))])
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
