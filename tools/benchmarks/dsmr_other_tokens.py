#!/usr/bin/env python
"""Why does memory cost the DSMR control's models on the tokens that repeat nothing?

On the control pieces, cpu-long's memory models score their "other" tokens (bars that repeat no earlier bar) worse with
their memory than with it reset: full memory 2.81 against 2.77 nats/token, compressed full-horizon memory (`fhcr_lowrank`)
2.84 against 2.76, at the same weights. Every one of those runs kept its first phase's weights (best validation step 0),
so those weights are the models scored. This reloads them from `data/cache/dsmr-runs` (cpu-long's e04 leaves them there),
streams the 32 held-out control pieces with each model's memory and with it reset, and splits the other tokens by what
the memory offers them (the cause it tests: a model that copies is lured by earlier matches that continue differently):

- lured: the k tokens before it occur in the memory's reach (before the token's segment, at most the horizon back) and
  every such earlier occurrence continued with a different token;
- helped: some earlier occurrence there continued with this very token;
- clean: the k tokens before it do not occur there (memory offers no match to copy from).

If memory's cost sits on the lured tokens and the clean ones cost nothing, the memory works and the copying circuit pays
for its false matches: no drift, no defect of the codec. The script first checks that it rebuilt the models: each
piece's summed loss must match the committed `dsmr_repeats.csv` of cpu-long. Writes dsmr_other_tokens.csv beside itself.

    python tools/benchmarks/dsmr_other_tokens.py          # k = 1, 2 and 3 tokens of context matched
"""
import json, sys, tempfile
from pathlib import Path
import numpy as np, pandas as pd, torch
from sage_paper.core import device_info, versions
from sage_paper.evaluate import REPEAT_BUCKETS, repeat_bucket, stream_token_nll, token_repeats
from sage_paper.model import ModelConfig, MusicTransformer
from sage_paper.recurrence import MemoryConfig, RecurrentLM
from sage_paper.reproduce import profile_params

ROOT = Path(__file__).resolve().parents[2]
NB = ROOT / "nbs/experiments/e04_dsmr.ipynb"
ARMS = ("full", "two_scale", "fhcr_lowrank")  # the variants whose scored weights are their first phase's


def e04_namespace(out_dir):
    "e04's cells up to its run specs, executed with cpu-long's parameters (no training): pieces, `train_spec`, `build`."
    cells = [c for c in json.loads(NB.read_text())["cells"] if c["cell_type"] == "code"]
    p = profile_params("cpu-long", "e04_dsmr") | dict(profile="cpu-long", out_dir=str(out_dir))
    ns = {}
    for c in cells:
        src = "".join(c["source"])
        if "parameters" in c.get("metadata", {}).get("tags", []):
            exec(src, ns); ns.update(p); continue
        exec(src, ns)
        if "def train_spec" in src: return ns  # the run specs are defined; the next cell trains
    raise RuntimeError("e04 has no train_spec cell")


def other_kinds(ids, label, seg_len, horizon, k):
    "For each token j of a piece (predicted from j-1): 'lured', 'helped' or 'clean' for other tokens, else its label."
    kinds = label.copy()
    for j in range(k + 1, len(ids)):
        if label[j] != "other": continue
        s0 = (j - 1) // seg_len * seg_len  # first input position of the segment that predicts token j
        lo = max(0, s0 - horizon)
        ctx, nxt = tuple(ids[j - k:j]), set()
        for i in range(lo + k, s0 + 1):  # an earlier occurrence ending at i-1 whose continuation ids[i] sits in memory
            if i < len(ids) and tuple(ids[i - k:i]) == ctx: nxt.add(int(ids[i]))
        kinds[j] = "clean" if not nxt else "helped" if int(ids[j]) in nxt else "lured"
    return kinds


def main(ks=(1, 2, 3)):
    out_dir = Path(tempfile.mkdtemp(prefix="dsmr_other_"))
    ns = e04_namespace(out_dir)
    data = torch.load(ns["data_files"]["control"][0], weights_only=False)
    pieces, is_bar, T = [np.asarray(p) for p in data["valid"]], np.asarray(data["is_bar"]), ns["seg_len"]
    ref = pd.read_csv(ROOT / "figures/dsmr_repeats.csv").query("profile == 'cpu-long' and corpus == 'control'")
    labels = []
    for ids in pieces:
        lab = np.full(len(ids), "other", dtype=object)
        for r in token_repeats(is_bar, ids).query("source_bar >= 0").itertuples(): lab[r.start + 1:r.end] = repeat_bucket(r.distance, T)
        labels.append(lab)
    rows, seeds = [], ns["seeds"]
    for arm in ARMS:
        for seed in (seeds[:1] if arm in ns["one_seed"] else seeds):
            spec = ns["train_spec"]("control", arm, seed)
            f = Path(spec["phase1"]["cache"])
            if not f.is_file(): print(f"{arm} seed {seed}: no kept first phase ({f.name}); run cpu-long's e04 first"); continue
            mem = MemoryConfig(**spec["memory"])
            rlm = RecurrentLM(MusicTransformer(ModelConfig(**spec["model"])), mem, freeze_codec=True)
            rlm.model.load_state_dict(torch.load(f, map_location="cpu", weights_only=False)["model"])
            nll = {m: stream_token_nll(rlm, pieces, T, batch=spec["val_batch"], max_memory=m) for m in (None, 0)}
            got = np.array([n.sum() for n in nll[None]])
            want = ref.query("variant == @arm and seed == @seed").groupby("piece").nll.sum().to_numpy()
            if len(want) != len(got) or not np.allclose(got, want, rtol=1e-4):
                raise SystemExit(f"{arm} seed {seed}: rebuilt model does not match the committed run (nll {got.sum():.1f} vs {want.sum():.1f})")
            H = max(rlm.horizons)
            for k in ks:
                for p, ids in enumerate(pieces):
                    kinds = other_kinds(ids, labels[p], T, H, k)[1:]  # nll[j] is the loss of token j + 1
                    for kind in ("lured", "helped", "clean", *(REPEAT_BUCKETS if k == ks[0] else ())):
                        m = kinds == kind
                        rows.append(dict(variant=arm, seed=seed, k=k if kind in ("lured", "helped", "clean") else np.nan, piece=p, kind=kind,
                                         tokens=int(m.sum()), nll=float(nll[None][p][m].sum()), nll_reset=float(nll[0][p][m].sum())))
            print(f"{arm} seed {seed}: rebuilt (total nll {got.sum():.1f} matches the committed run)", flush=True)
    df = pd.DataFrame(rows)
    keys = ["variant", "k", "kind"]
    g = df.groupby(keys, dropna=False)[["tokens", "nll", "nll_reset"]].sum()
    g = g.assign(seeds=df.groupby(keys, dropna=False).seed.nunique())
    g = g.assign(tokens_per_seed=g.tokens / g.seeds, via_memory=g.nll / g.tokens, reset=g.nll_reset / g.tokens, memory_cost=(g.nll - g.nll_reset) / g.tokens)
    v = versions()
    out = g.reset_index().assign(device=device_info()["device"], python=v["python"], torch=v.get("torch"))
    with pd.option_context("display.width", 200):
        print(out[keys + ["seeds", "tokens_per_seed", "via_memory", "reset", "memory_cost"]].round(3).to_string(index=False))
    out.to_csv(Path(__file__).with_suffix(".csv"), index=False)
    print(f"wrote {Path(__file__).with_suffix('.csv')}")


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or (1, 2, 3))
