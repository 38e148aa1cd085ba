"""README.md is rendered from nbs/index.ipynb (Quarto, which nbdev_readme needs, cannot be installed here).

`python tools/readme.py` writes it; `python tools/readme.py --check` fails if README.md is stale.
Markdown cells are copied as they are; code cells become fenced code blocks."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render(index=ROOT / "nbs" / "index.ipynb") -> str:
    "The README text of the index notebook."
    cells = json.loads(Path(index).read_text())["cells"]
    parts = []
    for c in cells:
        src = "".join(c["source"]).strip()
        if not src or src.startswith("#| hide"): continue
        parts.append(src if c["cell_type"] == "markdown" else f"```python\n{src}\n```")
    note = "<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, then run `make readme` -->"
    return note + "\n\n" + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    text, readme = render(), ROOT / "README.md"
    if "--check" in sys.argv:
        if readme.read_text() != text: sys.exit("README.md is stale: run `make readme` (it renders nbs/index.ipynb)")
    else:
        readme.write_text(text)
