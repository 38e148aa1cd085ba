"The papermill pipeline: the smoke profile end to end, failure isolation, skip-if-unchanged, the manifest."
import json

import nbformat
import pandas as pd
import pytest

from sage_paper import reproduce as R


def _nb(path, code):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    params = nbformat.v4.new_code_cell('profile = "smoke"\nout_dir = "."\nvalue = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def fake_experiments(tmp_path, monkeypatch):
    "Two experiment notebooks: one fails, one writes a table."
    d = tmp_path / "exp"
    d.mkdir()
    bad = _nb(d / "a_fails.ipynb", "raise RuntimeError('boom in a_fails')")
    good = _nb(d / "b_writes.ipynb", "import pandas as pd\nfrom sage_paper.reproduce import save_table\n"
                                     "save_table(pd.DataFrame(dict(value=[value])), 'b_table', out_dir, profile)")
    monkeypatch.setattr(R, "experiment_notebooks", lambda only=None: [p for p in (bad, good) if not only or p.stem in only])
    return tmp_path


def test_a_failing_notebook_does_not_stop_the_others(fake_experiments):
    out = fake_experiments / "out"
    e = R.reproduce("smoke", out_dir=out, verbose=False)
    nbs = e["notebooks"]
    assert nbs["a_fails"]["status"] == "failed" and "boom in a_fails" in nbs["a_fails"]["error"]
    assert nbs["b_writes"]["status"] == "ok"
    assert pd.read_csv(out / "b_table.csv").value.tolist() == [1]
    m = json.loads((out / "manifest.json").read_text())["runs"]["smoke"]
    assert m["versions"]["miditok"] == "3.1.0" and m["device"].startswith(("cpu", "cuda"))
    assert any(o.endswith("b_table.csv") for o in m["notebooks"]["b_writes"]["outputs"])


def test_unchanged_notebooks_are_skipped_and_changed_ones_rerun(fake_experiments, monkeypatch):
    out = fake_experiments / "out"
    R.reproduce("smoke", out_dir=out, verbose=False)
    e = R.reproduce("smoke", out_dir=out, verbose=False)
    assert e["notebooks"]["b_writes"].get("skipped") is True
    assert e["notebooks"]["a_fails"]["status"] == "failed" and not e["notebooks"]["a_fails"].get("skipped")
    monkeypatch.setitem(R.PROFILES["smoke"], "b_writes", {"value": 2})     # a parameter changed
    e = R.reproduce("smoke", out_dir=out, verbose=False)
    assert not e["notebooks"]["b_writes"].get("skipped")
    assert pd.read_csv(out / "b_table.csv").value.tolist() == [2]           # its smoke row replaced, not appended
    e = R.reproduce("smoke", out_dir=out, force=True, only=["b_writes"], verbose=False)
    assert not e["notebooks"]["b_writes"].get("skipped")


def test_exit_status_and_cli_errors(fake_experiments):
    assert R.main(["--profile", "smoke", "--out", str(fake_experiments / "o2")]) == 1
    with pytest.raises(SystemExit):
        R.main(["--profile", "tpu"])


def test_smoke_profile_runs_every_experiment_notebook(tmp_path):
    "The CI run of the real experiment notebooks: all succeed and write their tables and figures."
    e = R.reproduce("smoke", out_dir=tmp_path, verbose=True)
    failed = {k: v["error"] for k, v in e["notebooks"].items() if v["status"] != "ok"}
    assert not failed, failed
    assert set(e["notebooks"]) == {p.stem for p in R.experiment_notebooks()}
    for name in ("corpus_summary", "tokens_per_note"):
        df = pd.read_csv(tmp_path / f"{name}.csv")
        assert len(df) and set(df.profile) == {"smoke"}
    assert (tmp_path / "smoke" / "tokens_per_note.png").exists() and (tmp_path / "smoke" / "tokens_per_note.svg").exists()
