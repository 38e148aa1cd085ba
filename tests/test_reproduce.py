"The papermill pipeline: the smoke profile end to end, failure isolation, skip-if-unchanged, the manifest."
import json
import re

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


# What each experiment notebook must write, and a property of each table that only a working run has.
SMOKE_TABLES = {
    "e00_corpus": {"corpus_summary": lambda d: d.notes.sum() > 0},
    "e01_tokens": {"tokens_per_note": lambda d: (d.tokens_per_note > 0.5).all()},
    "e02_bpe_study": {"bpe_study": lambda d: d.bits_per_note.notna().all() and (d.bits_per_note_rel[d.n_merges == 0] == 0).all(),
                      "bpe_pieces": lambda d: (d.notes > 0).all() and d.nll.gt(0).all()},
    "e03_askvhs": {"decode_benchmark": lambda d: d.error.fillna("").eq("").all() and (d.tokens_per_s > 0).all()
                                        and d.timing.eq("decode").any() and (d.bw_share > 0).all() and d.pooled.any(),
                   "askvhs_quality": lambda d: d.bits_per_note.gt(0).all() and d.pooled.any(),
                   "askvhs_pieces": lambda d: d.groupby("variant").piece_id.apply(tuple).nunique() == 1},
    "e04_dsmr": {"dsmr_table": lambda d: (d.best_val_ppl > 1).all() and {"full", "two_scale"} <= set(d.variant),
                 "context_utilization": lambda d: (d.distance >= 0).all(),
                 "dsmr_repeats": lambda d: (d.tokens > 0).all() and d.corpus.eq("control").any() and (d.gain[d.variant == "none"] == 0).all(),
                 "dsmr_scale": lambda d: (d.peak_mem_mb > 0).all() and (d.tokens_per_s > 0).all()},
    "e05_claims": {"claims": lambda d: set(d.verdict) <= {"holds", "fails", "undecided", "untested"} and d.claim_id.nunique() >= 17},
    "e06_checkpoints": {"checkpoints": lambda d: {"MHA", "AS-KVHS G=2"} <= set(d.name) and d.bits_per_note.gt(0).all()
                        and d.untrained_bits_per_note.gt(d.bits_per_note).all() and d.model_bytes.gt(0).all()},
}


def test_smoke_profile_runs_every_experiment_notebook(tmp_path):
    "The CI run of the real experiment notebooks: each succeeds and writes its own tables (and figures), with plausible rows."
    e = R.reproduce("smoke", out_dir=tmp_path, verbose=True)
    failed = {k: v["error"] for k, v in e["notebooks"].items() if v["status"] != "ok"}
    assert not failed, failed
    assert set(e["notebooks"]) == {p.stem for p in R.experiment_notebooks()}
    for nb, tables in SMOKE_TABLES.items():
        outputs = e["notebooks"][nb]["outputs"]
        for name, ok in tables.items():
            assert any(o.endswith(f"{name}.csv") for o in outputs), (nb, name, outputs)
            df = pd.read_csv(tmp_path / f"{name}.csv")
            assert len(df) and set(df.profile) == {"smoke"} and ok(df), (nb, name)
        assert any(o.endswith(".png") for o in outputs), (nb, "no figure")
        # the record a reader sees: no embedded image, and every figure it links is a file this run saved
        rec = nbformat.read(tmp_path / "smoke" / "notebooks" / f"{nb}.ipynb", 4)
        links = re.findall(r"!\[[^\]]*\]\(\.\./([^)]+)\)", json.dumps([o for c in rec.cells for o in c.get("outputs", [])]))
        assert "image/png" not in json.dumps(rec) and links and all((tmp_path / "smoke" / f).is_file() for f in links), (nb, links)
