#!/usr/bin/env python
"""AS-KVHS projection kernels side by side: microseconds to project one new token per sequence.

GQA (no attributes, for scale), full-rank AS-KVHS with the fused, grouped and gathered kernels, and the rank-16
form, for d_model 512, H = 8, 8 attribute types, G in {1, 2, 8}, batch in {1, 8, 64}: eager in fp32 and bf16, and
compiled as the CPU decoder compiles its step (bf16, torch.compile with inductor's freezing; grouped is left out
there: it reads counts on the host); then a whole attention layer decoding one token after 256 cached tokens.
Every row of one run is measured in the same process, interleaved, one thread, inference mode; each number is a
low quantile of 9 repeats of CPU time per call (robust to other processes on a shared machine). Writes
askvhs_kernels.csv beside this script.

    python tools/benchmarks/askvhs_kernels.py [--out FILE] [--n CALLS]
"""
import argparse
from pathlib import Path
import pandas as pd
import torch
import torch._inductor.config as inductor_config
from sage_paper.attention import AttentionConfig, CausalSelfAttention, KVCache
from sage_paper.core import device_info, versions
import cpu_clock  # beside this script


def us_per_call(f, n=200):
    "CPU microseconds per call of f: the third-lowest of 9 repeats of n calls, after 20 warm-up calls."
    return cpu_clock.us_per_call(f, n, reps=9, keep=2, warmup=20)


def attention(kind, G, kernel='auto', rank=None, d=512, H=8, A=8, dtype=torch.float32):
    kw = dict(attention='gqa') if kind == 'GQA' else dict(attention='askvhs', askvhs_rank=rank)
    att = CausalSelfAttention(AttentionConfig(d_model=d, n_head=H, n_kv_head=G, n_attr=A, **kw)).eval()
    with torch.no_grad(): att.qkv.weight.normal_(std=0.02)  # untie the attribute projections
    att.askvhs_kernel = kernel
    return att.to(dtype)


def compiled(f):
    "f compiled as the CPU decoder compiles its step: weights frozen (constants, packed for oneDNN)."
    c = torch.compile(f, dynamic=False)
    def call():
        with inductor_config.patch(freezing=True): return c()
    return call


KERNELS = {'GQA': dict(kind='GQA'), 'AS-KVHS fused': dict(kind='askvhs', kernel='fused'),
           'AS-KVHS grouped': dict(kind='askvhs', kernel='grouped'), 'AS-KVHS gathered': dict(kind='askvhs', kernel='gathered'),
           'AS-KVHS rank 16': dict(kind='askvhs', rank=16)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(Path(__file__).with_suffix('.csv')))
    ap.add_argument('--n', type=int, default=200, help='calls per repeat')
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch._dynamo.config.recompile_limit = 256
    rows = []
    with torch.inference_mode():
        for B in (1, 8, 64):
            for G in (1, 2, 8):
                for dtype, how in ((torch.float32, 'eager'), (torch.bfloat16, 'eager'), (torch.bfloat16, 'compiled')):
                    x, attr = torch.randn(B, 1, 512, dtype=dtype), torch.randint(0, 8, (B, 1))
                    for name, kw in KERNELS.items():
                        if how == 'compiled' and name == 'AS-KVHS grouped': continue
                        att = attention(G=G, dtype=dtype, **kw)
                        f = lambda att=att: att.project_qkv(x, attr)
                        rows.append(dict(what='projection', how=how, dtype=str(dtype)[6:], kernel=name, batch=B, kv_heads=G,
                                         us_per_call=us_per_call(compiled(f) if how == 'compiled' else f, a.n)))
            for name, kw in KERNELS.items():  # a whole layer, one token after 256 cached, G = 2, fp32 eager
                att = attention(G=2, **kw)
                cache = KVCache(1, B, 2, 257, 64); cache.length = 256; cache.pos.fill_(256)
                x, attr = torch.randn(B, 1, 512), torch.randint(0, 8, (B, 1))
                def step():
                    cache.length = 256; cache.pos.fill_(256)
                    att(x, attr=attr, cache=cache, layer_idx=0)
                rows.append(dict(what='layer step, 256 cached', how='eager', dtype='float32', kernel=name, batch=B, kv_heads=2,
                                 us_per_call=us_per_call(step, a.n // 4)))
            print(pd.DataFrame(rows[-5:]).to_string(index=False), flush=True)
    v = versions(('torch',))
    df = pd.DataFrame(rows).assign(device=device_info()['device'], torch=v['torch'], python=v['python'], threads=1)
    df.to_csv(a.out, index=False)
    print(f'wrote {a.out}')


if __name__ == '__main__': main()
