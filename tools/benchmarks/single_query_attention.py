#!/usr/bin/env python
"""Single-query attention kernels side by side: microseconds for one decoding step of one layer's attention.

One query per sequence over a bf16 cache of L slots (the static cache's masked layout, as the compiled CPU
decoder reads it), H = 8 query heads over G KV heads, head_dim 64, for G in {1, 2, 8}, batch in {1, 64},
L in {272, 1024, 4096}: SDPA (what the eager decoder runs), and `attend_single` as two reductions (the loops)
and as two batched matmuls, compiled as the CPU decoder compiles its step. Each row also gives the cache bytes
read per call and the GB/s that reaches, and the ratio to the loops. Every row
of one run is measured in the same process, one thread, inference mode; each number is a low quantile of 7
repeats of CPU time per call (robust to other processes on a shared machine). Writes single_query_attention.csv
beside this script.

    python tools/benchmarks/single_query_attention.py [--out FILE]
"""
import argparse
from functools import partial
from pathlib import Path
import pandas as pd
import torch
import torch.nn.functional as F
from sage_paper.attention import attend_single
from sage_paper.core import device_info, versions
from cpu_clock import us_per_call  # beside this script


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(Path(__file__).with_suffix('.csv')))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch._dynamo.config.recompile_limit = 256
    sdpa = lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m)  # (B, G, r, dh) rows, as `attend` folds them
    kernels = {'sdpa (eager)': sdpa, 'reduce (compiled)': torch.compile(partial(attend_single, how='reduce'), dynamic=False),
               'matmul (compiled)': torch.compile(partial(attend_single, how='matmul'), dynamic=False)}
    rows = []
    with torch.inference_mode():
        for G in (1, 2, 8):
            for B in (1, 64):
                for L in (272, 1024, 4096):
                    g = torch.Generator().manual_seed(0)
                    q = torch.randn(B, G, 8 // G, 64, generator=g).bfloat16()  # (B, G, r, dh)
                    k, v = (torch.randn(B, G, L, 64, generator=g).bfloat16() for _ in range(2))  # (B, G, L, dh)
                    mask = torch.arange(L)[None] < L - 8  # (1, L): the last slots not written yet
                    n = max(3, int(4e6 // (B * G * L * 64)))
                    nbytes = 2 * k.numel() * k.element_size()
                    ref = kernels['sdpa (eager)'](q, k, v, mask).float()
                    for name, f in kernels.items():
                        err = float((f(q, k, v, mask).float() - ref).abs().max())
                        us = us_per_call(lambda: f(q, k, v, mask), n, reps=7, keep=1, warmup=3)
                        rows.append(dict(kernel=name, kv_heads=G, batch=B, cached=L, us_per_call=us, cache_mb=nbytes / 1e6,
                                         gb_s=nbytes / us / 1e3, max_abs_err_vs_sdpa=err))
                    r = pd.DataFrame(rows[-len(kernels):])
                    loops = r.loc[r.kernel == 'reduce (compiled)', 'us_per_call'].iloc[0]
                    print(f"G={G} B={B:<2d} L={L:<4d} " + "  ".join(f"{k} {u:8.0f} us ({loops / u:4.2f}x loops, {gb:5.1f} GB/s)"
                                                                   for k, u, gb in zip(r.kernel, r.us_per_call, r.gb_s)), flush=True)
    v = versions(('torch',))
    df = pd.DataFrame(rows)
    df['vs_reduce'] = df.groupby(['kv_heads', 'batch', 'cached']).us_per_call.transform(
        lambda s: s[df.loc[s.index, 'kernel'].eq('reduce (compiled)')].iloc[0]) / df.us_per_call
    df = df.assign(device=device_info()['device'], torch=v['torch'], python=v['python'], threads=1)
    df.to_csv(a.out, index=False)
    print(f'wrote {a.out}')


if __name__ == '__main__': main()
