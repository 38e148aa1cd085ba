"README.md is rendered from nbs/index.ipynb, and the README's test command is what CI runs."
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_rendered_from_the_index_notebook():
    r = subprocess.run([sys.executable, "tools/readme.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_ci_runs_the_readme_test_command():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make reproduce" in readme
    assert [l for l in ci.splitlines() if l.strip() == "make test"]


def test_readme_gallery_is_the_manifest():
    "The figure gallery lists what figures/manifest.json says ran, and every figure it links exists."
    import re
    from sage_paper.reproduce import figure_gallery
    readme, table = (ROOT / "README.md").read_text(), figure_gallery(ROOT / "figures" / "manifest.json")
    assert table in readme, "README's gallery differs from figure_gallery(): run `make readme`"
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", table)
    assert len(links) >= 20 and all((ROOT / l).is_file() for l in links)


def test_every_recorded_run_finished_on_the_device_it_names():
    "Every run the manifest records for the cpu and gpu profiles finished, on a device of its kind; the README renders each."
    import json
    runs = json.loads((ROOT / "figures" / "manifest.json").read_text())["runs"]
    for prof, want in (("gpu", "cuda"), ("cpu", "cpu")):
        for nb, e in runs.get(prof, {}).get("notebooks", {}).items():
            assert e["status"] == "ok" and e["device"].startswith(want), (prof, nb, e["status"], e["device"])
    readme = (ROOT / "README.md").read_text()
    assert all(f"| {p} |" in readme for p in runs if p in ("cpu", "gpu"))
