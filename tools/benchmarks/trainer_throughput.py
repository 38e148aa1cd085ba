#!/usr/bin/env python
"""Training throughput of the small decoders of the BPE study (e02) and the AS-KVHS quality study (e03), side by side.

Two comparisons, every row measured in this one run:

1. **The loss layout** (one process, one thread): a training step (forward, cross-entropy, backward, AdamW) with
   the cross-entropy on `(B, V, T)` logits (a transposed call: the layout before) against `(B*T, V)` rows
   (`train.lm_loss` now). Predicted tokens per CPU second, the median of interleaved repeats.
2. **Runs over worker processes**: the same steps in 1 process against 2 single-thread processes at once (what
   `evaluate.parallel_runs` does for independent seeds and variants): tokens per wall second of all processes.

The configs are the studies' cpu-long sizes with random tokens (speed does not depend on the values): window
lengths are the studies' notes per window times the tokens per note of their views. Writes
trainer_throughput.csv beside this script.

    python tools/benchmarks/trainer_throughput.py [--steps N] [--out FILE]
"""
import argparse, os, time
from pathlib import Path
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sage_paper.core import device_info, versions
from sage_paper.model import ModelConfig, MusicTransformer
from sage_paper.train import TrainConfig, Trainer, lm_loss, PAD_ID
from sage_paper.evaluate import parallel_runs

# (study, model, vocabulary, window tokens, batch): e02 at 64 notes per window (piano view: ~4.3 tokens per note
# without BPE, ~2.0 with 2k merges); e03 at 72 notes (multi-track REMI: ~4.0 tokens per note)
CONFIGS = {
    "e02 piano, no BPE": (dict(d_model=64, n_layer=2, n_head=4), 240, 277, 16),
    "e02 piano, BPE 2k": (dict(d_model=64, n_layer=2, n_head=4), 2000, 129, 16),
    "e03 REMI MHA": (dict(d_model=128, n_layer=4, n_head=8), 330, 289, 8),
}


def lm_loss_transposed(model, batch, pad_id=PAD_ID):
    "The layout before: cross-entropy on (B, V, T) logits, as a transposed call asks for."
    t = batch['tokens']
    lg = model(t[:, :-1])  # (B, T, V)
    nll = F.cross_entropy(lg.transpose(1, 2).float(), t[:, 1:], ignore_index=pad_id, reduction='none').sum(1)  # (B, V, T) -> (B,)
    return nll.sum(), (t[:, 1:] != pad_id).sum()


def trainer(name, loss_fn, seed=0):
    kw, V, T, B = CONFIGS[name]
    torch.manual_seed(seed)
    model = MusicTransformer(ModelConfig(vocab_size=V, max_seq_len=T - 1, **kw))
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randint(1, V, (B, T), generator=g) for _ in range(8)]  # (B, T) each
    tc = TrainConfig(max_steps=10**6, batch_size=B, warmup_steps=0, eval_every=0, log_every=10**6, progress=False, schedule='constant')
    return Trainer(model, lambda s: batches[s % len(batches)], tc, loss_fn=loss_fn), B * (T - 1)


def steps_per_cpu_second(tr, n):
    t0 = time.process_time()
    for _ in range(n): tr._train_step()
    return n / (time.process_time() - t0)


def _worker(job):
    name, steps = job
    tr, tok = trainer(name, lm_loss)
    tr._train_step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps): tr._train_step()
    return t0, time.perf_counter(), steps * tok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved blocks per layout")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".csv")))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    env = dict(device=device_info()["device"], **versions(("torch",)), threads=1, load_avg_1min=os.getloadavg()[0])
    rows = []
    for name in CONFIGS:
        before, tok = trainer(name, lm_loss_transposed); after, _ = trainer(name, lm_loss)
        for tr in (before, after): steps_per_cpu_second(tr, 3)  # warm-up
        sb, sa = [], []
        for _ in range(a.repeats):  # interleaved, so both layouts see the same machine
            sb.append(steps_per_cpu_second(before, a.steps)); sa.append(steps_per_cpu_second(after, a.steps))
        b, f = np.median(sb) * tok, np.median(sa) * tok
        rows.append(dict(comparison="loss layout", config=name, before="(B, V, T) logits", after="(B*T, V) rows",
                         before_tokens_per_s=b, after_tokens_per_s=f, ratio=f / b, clock="cpu", **env))
        print(f"{name:20s} loss layout: {b:8.0f} -> {f:8.0f} tokens/CPU s  ({f / b:.2f}x)", flush=True)
    for name in CONFIGS:
        one = parallel_runs(_worker, [(name, 3 * a.steps)], n_jobs=1)[0]
        two = parallel_runs(_worker, [(name, 3 * a.steps)] * 2, n_jobs=2)
        r1 = one[2] / (one[1] - one[0])
        r2 = sum(t for _, _, t in two) / (max(e for _, e, _ in two) - min(s for s, _, _ in two))
        rows.append(dict(comparison="worker processes", config=name, before="1 process", after="2 single-thread processes",
                         before_tokens_per_s=r1, after_tokens_per_s=r2, ratio=r2 / r1, clock="wall", **env))
        print(f"{name:20s} workers:     {r1:8.0f} -> {r2:8.0f} tokens/wall s ({r2 / r1:.2f}x)", flush=True)
    pd.DataFrame(rows).to_csv(a.out, index=False)
    print(f"{env['device']}, torch {env['torch']}, one thread per process; 1-min load average at the start {env['load_avg_1min']:.1f}")


if __name__ == "__main__":
    main()
