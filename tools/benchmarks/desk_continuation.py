#!/usr/bin/env python
"""Continuing a piece at the reader's desk and in the playground: the sliding-window sampler and the cached one, side by side.

For every committed checkpoint (`data/checkpoints/`), the first 4 bars of two Bach chorales are continued by 4 bars as
`desk.continue_bars` does (its token budget, nucleus 0.95), for two seeds each, by

* `window`: `evaluate.window_sampler` through `evaluate.sample_bars`, on torch's default CPU threads: a fresh decoder per
  window of L // 4 tokens, `stop` asked after each window;
* `cached`: `evaluate.cached_sampler` (what `desk.continue_bars` and `explore.continue_piece` use): the same windows and
  draws, one decoder, `stop` asked after every token, one CPU thread;

and, to tell those changes apart, `window` on one thread and `cached` on the default threads; then the two entry points as a
reader calls them, `desk.continue_bars` and `explore.continue_piece(..., bars=4)`. The variants of one continuation run one
after another, so they share the machine's load; a first continuation per checkpoint is run untimed.

Per checkpoint and variant: wall seconds per continuation (mean and min over the 4), process CPU seconds, new tokens,
whether the tokens are those of `window`, and the ratio of `window`'s mean to the variant's. With the device, versions,
torch's default thread count and the load average (1 minute) before and after. Writes desk_continuation.csv beside this
script. On a shared machine run it niced, and read the ratios, not the seconds:

    nice -n 19 python tools/benchmarks/desk_continuation.py [--out FILE]
"""
import argparse, math, os, time
from datetime import datetime, timezone
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from sage_paper.core import device_info, versions
from sage_paper.data import load_corpus, read_midi
from sage_paper.tokenizer import encode
from sage_paper.evaluate import prompt_and_reference, sample_bars, window_sampler, cached_sampler, model_attr_table
from sage_paper.explore import list_checkpoints, load_checkpoint, continue_piece
from sage_paper.desk import continue_bars

BARS, PROMPT_BARS, TOP_P = 4, 4, 0.95


def threads(n):
    "A context that sets torch's CPU threads to n and restores them."
    class T:
        def __enter__(self): self.was = torch.get_num_threads(); torch.set_num_threads(n)
        def __exit__(self, *a): torch.set_num_threads(self.was)
    return T()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(Path(__file__).with_suffix('.csv')))
    ap.add_argument('--seeds', type=int, default=2)
    a = ap.parse_args(argv)
    default = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    man = load_corpus("music21-multitrack", composers=("bach",), max_per_composer=2, progress=False)
    scores = [read_midi(p) for p in man.path]
    rows = []
    for name in list_checkpoints().name:
        ck = load_checkpoint(name)
        tok, model = ck.tok, ck.model
        attr = model_attr_table(model, tok)
        jobs = []
        for sc in scores:
            prompt, _, first = prompt_and_reference(tok, encode(tok, sc), PROMPT_BARS, 1)
            budget = 3 * BARS * math.ceil(len(prompt) / PROMPT_BARS) + 16  # continue_bars' budget
            jobs += [(sc, prompt, first, budget, s) for s in range(a.seeds)]
        bars = lambda sampler, p, f, b: sample_bars(model, tok, [p], [f], BARS, [b], sampler)[0]
        window = lambda s: window_sampler(tok, TOP_P, 1.0, s, attr_of=attr)
        cached = lambda s, n=1: cached_sampler(tok, TOP_P, 1.0, s, attr_of=attr, threads=n)
        variants = {  # name -> (torch threads around the call, threads it decodes on, fn(score, prompt, first, budget, seed) -> new ids)
            'window': (default, default, lambda sc, p, f, b, s: bars(window(s), p, f, b)),
            'cached': (default, 1, lambda sc, p, f, b, s: bars(cached(s), p, f, b)),
            'window, 1 thread': (1, 1, lambda sc, p, f, b, s: bars(window(s), p, f, b)),
            f'cached, {default} threads': (default, default, lambda sc, p, f, b, s: bars(cached(s, None), p, f, b)),
            'desk.continue_bars': (default, 1, lambda sc, p, f, b, s: continue_bars(ck, sc, PROMPT_BARS, BARS, s)),  # Scores
            'explore.continue_piece(bars=4)': (default, 1, lambda sc, p, f, b, s: continue_piece(model, tok, p, b, top_p=TOP_P, seed=s, bars=BARS)[len(p):]),
        }
        with threads(1): bars(cached(0), *jobs[0][1:4])  # untimed: first-call costs (grammar tables, allocator)
        got = {v: [] for v in variants}
        for job in jobs:
            for v, (n, _, fn) in variants.items():
                with threads(n):
                    t, c = time.perf_counter(), time.process_time()
                    out = fn(*job)
                    got[v].append((time.perf_counter() - t, time.process_time() - c, out))
        ref = [o for *_, o in got['window']]
        for v, res in got.items():
            wall, ids = np.array([w for w, _, _ in res]), [o if isinstance(o, np.ndarray) else None for *_, o in res]
            rows.append(dict(checkpoint=name, tokenizer=ck.card.get('tokenizer'), attention=model.cfg.attention,
                             max_seq_len=model.cfg.max_seq_len, prompt_tokens=float(np.mean([len(j[1]) for j in jobs])),
                             variant=v, decode_threads=variants[v][1], continuations=len(res), seconds_mean=wall.mean(),
                             seconds_min=wall.min(), cpu_seconds_mean=float(np.mean([c for _, c, _ in res])),
                             new_tokens_mean=float(np.mean([len(o) for o in ids])) if ids[0] is not None else float('nan'),
                             same_tokens_as_window=all(np.array_equal(o, r) for o, r in zip(ids, ref)) if ids[0] is not None else None))
        df = pd.DataFrame(rows[-len(variants):])
        base = df.seconds_mean[df.variant == 'window'].iloc[0]
        print(f"{name:16s} L={model.cfg.max_seq_len:<4d} prompt {df.prompt_tokens.iloc[0]:5.0f} tokens: " +
              "  ".join(f"{v} {s:6.2f} s ({base / s:5.1f}x)" for v, s in zip(df.variant, df.seconds_mean)), flush=True)
    load_after = os.getloadavg()[0]
    df = pd.DataFrame(rows)
    df['speedup_vs_window'] = df.groupby('checkpoint').seconds_mean.transform(lambda s: s[df.loc[s.index, 'variant'].eq('window')].iloc[0]) / df.seconds_mean
    v = versions(('torch', 'miditok'))
    df = df.assign(device=device_info()['device'], torch=v['torch'], miditok=v['miditok'], python=v['python'],
                   default_threads=default, loadavg_1min_before=load_before, loadavg_1min_after=load_after,
                   date=datetime.now(timezone.utc).strftime('%Y-%m-%d'))
    df.to_csv(a.out, index=False)
    print(f"{device_info()['device']}, torch {v['torch']}, {default} default threads, load average {load_before:.2f} before, {load_after:.2f} after")
    print(df.pivot(index='checkpoint', columns='variant', values='seconds_mean').round(2).to_string())
    print(f'wrote {a.out}')


if __name__ == '__main__': main()
