"""README.md is rendered from nbs/index.ipynb (Quarto, which nbdev_readme needs, cannot be installed here).

`python tools/readme.py` writes it; `python tools/readme.py --check` fails if README.md is stale.
Markdown cells are copied as they are. A code cell whose first line is `# README: rendered` is run, and the
markdown it returns (its last expression: a string, or an object with `.data`) takes its place: that is how
every result number reaches the README from figures/*.csv. Other code cells become fenced code blocks."""
import ast, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "# README: rendered"


def run_cell(src: str) -> str:
    "Run a rendered cell; return the markdown of its last expression."
    tree = ast.parse(src)
    body, last = tree.body[:-1], tree.body[-1]
    if not isinstance(last, ast.Expr): raise ValueError(f"a rendered cell must end with an expression:\n{src}")
    ns = {}
    exec(compile(ast.Module(body=body, type_ignores=[]), "<readme cell>", "exec"), ns)
    out = eval(compile(ast.Expression(last.value), "<readme cell>", "eval"), ns)
    return getattr(out, "data", out)


def render(index=ROOT / "nbs" / "index.ipynb") -> str:
    "The README text of the index notebook."
    cells = json.loads(Path(index).read_text())["cells"]
    parts = []
    for c in cells:
        src = "".join(c["source"]).strip()
        if not src or src.startswith("#| hide"): continue
        if c["cell_type"] == "code" and src.startswith(MARK): parts.append(str(run_cell(src)).strip())
        else: parts.append(src if c["cell_type"] == "markdown" else f"```python\n{src}\n```")
    note = "<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, then run `make readme` -->"
    return note + "\n\n" + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    text, readme = render(), ROOT / "README.md"
    if "--check" in sys.argv:
        if readme.read_text() != text: sys.exit("README.md is stale: run `make readme` (it renders nbs/index.ipynb and figures/)")
    else:
        readme.write_text(text)
