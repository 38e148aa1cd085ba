"tools/merge_results.py: results made on another machine merge into figures/ without losing anything computed here."
import importlib.util, json, tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("merge_results", ROOT / "tools" / "merge_results.py")
mr = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(mr)

HEAD = "profile,device,x\n"


def entry(status, finished, outputs, sha="b" * 40):
    return dict(status=status, finished=finished, duration_s=1.0, device="cuda (X)", git_sha=sha, outputs=outputs)


def archive(tmp, name, notebooks, csv_rows, files=()):
    "An archive laid out as tools/gpu_lease.sh packs it."
    d = tmp / name; (d / "figures" / "gpu").mkdir(parents=True)
    (d / "figures" / "manifest.json").write_text(json.dumps({"runs": {"gpu": dict(
        profile="gpu", device="cuda (X)", gpu="X", git_sha="b" * 40, versions={"torch": "9"}, notebooks=notebooks)}}))
    (d / "figures" / "t.csv").write_text(HEAD + csv_rows)
    for f in files: (d / f).write_bytes(b"png of " + name.encode())
    with tarfile.open(tmp / f"{name}.tgz", "w:gz") as tf: tf.add(d / "figures", "figures")
    return tmp / f"{name}.tgz"


@pytest.fixture
def clone(tmp_path):
    root = tmp_path / "clone"; (root / "figures" / "gpu").mkdir(parents=True)
    (root / "figures" / "t.csv").write_text(HEAD + 'cpu,"cpu (A, 2 cores)",0.30000000000000004\ngpu,old,1\n')
    (root / "figures" / "gpu" / "b.png").write_bytes(b"ours")
    (root / "figures" / "manifest.json").write_text(json.dumps({"runs": {
        "cpu": {"notebooks": {"e0": entry("ok", "2026-01-01", [])}},
        "gpu": {"profile": "gpu", "lease": "by hand", "notebooks": {"e1": entry("ok", "2026-01-05", ["figures/gpu/b.png"], "a" * 40)}}}}))
    return root


def test_merge_takes_newer_ok_runs_and_keeps_everything_else(clone, tmp_path):
    outs = ["figures/t.csv", "figures/gpu/a.png"]
    a1 = archive(tmp_path, "one", {"e0": entry("ok", "2026-01-09", outs), "e1": entry("timeout", "2026-01-09", [])},
                 "cpu,device's pandas,0.3\ngpu,new,2\n", ["figures/gpu/a.png"])
    a2 = archive(tmp_path, "two", {"e1": entry("ok", "2026-01-02", ["figures/gpu/b.png"])}, "", ["figures/gpu/b.png"])
    v = mr.merge([a1, a2], root=clone, log=lambda *a: None)
    assert v == {"e0": "taken", "e1": "one.tgz: timeout"}   # e1: failed in one, older than ours in two
    # the CSV: our cpu row exactly as written here, their gpu row instead of ours
    assert (clone / "figures" / "t.csv").read_text() == HEAD + 'cpu,"cpu (A, 2 cores)",0.30000000000000004\ngpu,new,2\n'
    assert (clone / "figures" / "gpu" / "a.png").read_bytes() == b"png of one"
    assert (clone / "figures" / "gpu" / "b.png").read_bytes() == b"ours"
    m = json.loads((clone / "figures" / "manifest.json").read_text())["runs"]
    assert m["cpu"]["notebooks"]["e0"]["finished"] == "2026-01-01"   # another profile: untouched
    g = m["gpu"]
    assert g["notebooks"]["e0"]["finished"] == "2026-01-09" and g["notebooks"]["e1"]["git_sha"] == "a" * 40
    assert g["git_sha"] == "b" * 40 and g["gpu"] == "X" and g["lease"] == "by hand" and g["finished"] == "2026-01-09"


def test_dry_run_changes_nothing_and_bad_archives_are_named(clone, tmp_path):
    before = {p: p.read_bytes() for p in (clone / "figures").rglob("*") if p.is_file()}
    a = archive(tmp_path, "one", {"e0": entry("ok", "2026-01-09", ["figures/t.csv"])}, "gpu,new,2\n")
    assert mr.merge([a], root=clone, dry_run=True, log=lambda *a: None) == {"e0": "taken"}
    assert before == {p: p.read_bytes() for p in (clone / "figures").rglob("*") if p.is_file()}
    missing = archive(tmp_path, "lost", {"e0": entry("ok", "2026-01-09", ["figures/gpu/nope.png"])}, "")
    with pytest.raises(FileNotFoundError, match="lost.tgz: lists figures/gpu/nope.png"):
        mr.merge([missing], root=clone, log=lambda *a: None)
    with pytest.raises(ValueError, match="no run of profile 'smoke'"):
        mr.merge([a], profile="smoke", root=clone, log=lambda *a: None)
