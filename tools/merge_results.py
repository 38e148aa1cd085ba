"""Merge the results of profile runs made elsewhere (a lent GPU machine) into this clone's figures/ and manifest.

`python tools/merge_results.py gpu_results.tgz [more.tgz ...] [--profile gpu] [--dry-run]`

Each archive holds figures/ (CSVs, figures/<profile>/*.png|svg, manifest.json) as `tools/gpu_lease.sh` packs it.
From each archive, every notebook whose manifest entry has status `ok` and finished later than the entry here is
taken; a failed or older entry is reported and left alone, so nothing computed here is lost:
  * its figure files are copied;
  * in its CSVs only the rows of `--profile` are replaced (the rows of other profiles stay as they are here);
  * its manifest entry replaces ours, and the run's fields (device, versions, commit) come from the newest archive taken.
Archives are read in the order given; a later one wins where both ran the same notebook."""
import argparse, io, json, shutil, sys, tarfile, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_FIELDS = ("git_sha", "git_dirty", "python", "platform", "cpu", "cpu_count", "device", "gpu", "cuda", "versions")


def _merge_csv(ours:Path, theirs:Path, profile:str):
    "Rows of `profile` from `theirs`, every other row from `ours` (ours first, in its order; rows kept as written)."
    import csv
    def rows(p):
        text = p.read_text(encoding="utf-8")
        recs = list(csv.reader(io.StringIO(text)))
        lines = text.splitlines(keepends=True)
        return recs, lines
    new_recs, _ = rows(theirs)
    if not new_recs or "profile" not in new_recs[0]: raise ValueError(f"{theirs.name}: no `profile` column, cannot merge by profile")
    if ours.exists():
        old_recs, _ = rows(ours)
        if old_recs and old_recs[0] != new_recs[0]:   # columns changed: let pandas align them
            import pandas as pd
            old, new = pd.read_csv(ours), pd.read_csv(theirs)
            pd.concat([old[old.profile != profile], new[new.profile == profile]], ignore_index=True).to_csv(ours, index=False)
            return
    else: old_recs = [new_recs[0]]
    k = new_recs[0].index("profile")
    keep = [old_recs[0]] + [r for r in old_recs[1:] if r[k] != profile] + [r for r in new_recs[1:] if r[k] == profile]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(keep)
    ours.write_text(buf.getvalue(), encoding="utf-8")


def merge(archives, profile:str="gpu", root:Path=ROOT, dry_run:bool=False, log=print) -> dict:
    "Merge `archives` into `root`'s figures/; returns {notebook: 'taken' | reason it was not}."
    root = Path(root)
    mpath = root / "figures" / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {"runs": {}}
    run = manifest["runs"].setdefault(profile, {"profile": profile, "notebooks": {}})
    verdict, taken_from = {}, None
    for arc in map(Path, archives):
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(arc) as tf:
            tf.extractall(tmp, filter="data")
            theirs_m = Path(tmp) / "figures" / "manifest.json"
            if not theirs_m.exists(): raise FileNotFoundError(f"{arc}: no figures/manifest.json inside")
            their_run = json.loads(theirs_m.read_text())["runs"].get(profile)
            if not their_run: raise ValueError(f"{arc}: its manifest has no run of profile {profile!r}")
            for nb, e in their_run["notebooks"].items():
                mine = run["notebooks"].get(nb, {})
                if e.get("status") != "ok": verdict.setdefault(nb, f"{arc.name}: {e.get('status')}"); continue
                if mine.get("status") == "ok" and (mine.get("finished") or "") >= (e.get("finished") or ""):
                    verdict.setdefault(nb, f"{arc.name}: not newer than ours"); continue
                lost = [o for o in e.get("outputs", []) if not (Path(tmp) / o).is_file()]
                if lost: raise FileNotFoundError(f"{arc}: lists {lost[0]} but does not hold it ({nb}; nothing of it copied)")
                for o in e.get("outputs", []):
                    src, dst = Path(tmp) / o, root / o
                    if dry_run: continue
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    if o.endswith(".csv"): _merge_csv(dst, src, profile)
                    else: shutil.copyfile(src, dst)
                run["notebooks"][nb], verdict[nb], taken_from = e, "taken", their_run
                log(f"merge: {nb} from {arc.name} ({e.get('duration_s')} s on {e.get('device')}, {len(e.get('outputs', []))} outputs)")
    if taken_from:
        run.update({k: taken_from[k] for k in RUN_FIELDS if k in taken_from})
        run["finished"] = max(e.get("finished") or "" for e in run["notebooks"].values())
        run["notebooks"] = dict(sorted(run["notebooks"].items()))
        if not dry_run: mpath.write_text(json.dumps(manifest, indent=1) + "\n")
    for nb, v in sorted(verdict.items()):
        if v != "taken": log(f"merge: {nb} not taken ({v})")
    return verdict


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archives", nargs="+", type=Path, help="result archives (.tgz) in the order to apply them")
    ap.add_argument("--profile", default="gpu", help="the profile whose rows and entries are merged (default: gpu)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the clone to merge into (default: this one)")
    ap.add_argument("--dry-run", action="store_true", help="report what would be taken, change nothing")
    a = ap.parse_args()
    try: merge(a.archives, a.profile, a.root, a.dry_run)
    except (OSError, ValueError, tarfile.TarError) as e: sys.exit(f"merge: {e}")
