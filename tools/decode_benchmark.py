#!/usr/bin/env python
"""Decoding-speed benchmark from the command line: the functions of `sage_paper.askvhs_study` that experiment e03 runs.

Writes a CSV with the columns of `decode_benchmark.csv` (one row per attention variant, batch and mode) and prints the
device and package versions. Examples (from the repository root):

    .venv/bin/python tools/decode_benchmark.py                                   # CPU, the default model, 256 new tokens
    .venv/bin/python tools/decode_benchmark.py --device cuda --new-tokens 512 \\
        --modes cuda_graph cuda_graph_compiled ours_eager hf_generate_dynamic hf_generate_static   # one H100
    .venv/bin/python tools/decode_benchmark.py --d-model 128 --n-layer 2 --new-tokens 32 --repeats 1 --out /tmp/b.csv
"""
import argparse, json, sys, time
from pathlib import Path


def main(argv=None):
    from sage_paper.askvhs_study import BENCH_MODES, VARIANTS, DecodeBenchConfig, decode_benchmark, bench_versions
    d = DecodeBenchConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d-model", type=int, default=d.d_model)
    ap.add_argument("--n-layer", type=int, default=d.n_layer)
    ap.add_argument("--n-head", type=int, default=d.n_head)
    ap.add_argument("--vocab-size", type=int, default=d.vocab_size)
    ap.add_argument("--prompt-len", type=int, default=d.prompt_len)
    ap.add_argument("--new-tokens", type=int, default=d.new_tokens)
    ap.add_argument("--batches", type=int, nargs="+", default=list(d.batches))
    ap.add_argument("--variants", nargs="+", default=list(d.variants), help=f"from {list(VARIANTS)}")
    ap.add_argument("--modes", nargs="+", default=list(d.modes), help=f"from {list(BENCH_MODES)}")
    ap.add_argument("--repeats", type=int, default=d.repeats)
    ap.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    ap.add_argument("--dtype", default=d.dtype, choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--tokens-per-note", type=float, default=None,
                    help="REMI tokens per note; default: measured on the music21 multi-track corpus (--max-per-composer works each)")
    ap.add_argument("--max-per-composer", type=int, default=4)
    ap.add_argument("--out", default="runs/cli/decode_benchmark.csv", help="CSV to write (runs/ is not tracked)")
    a = ap.parse_args(argv)
    cfg = DecodeBenchConfig(d_model=a.d_model, n_layer=a.n_layer, n_head=a.n_head, vocab_size=a.vocab_size, prompt_len=a.prompt_len,
                            new_tokens=a.new_tokens, batches=tuple(a.batches), variants=tuple(a.variants), modes=tuple(a.modes),
                            repeats=a.repeats, threads=a.threads or None, device=a.device, dtype=a.dtype, seed=a.seed)
    tpn = a.tokens_per_note
    if tpn is None:
        from sage_paper.data import load_corpus
        from sage_paper.tokenizer import spec_for, tokens_per_note
        df = tokens_per_note(spec_for("music21-multitrack", "REMI").build(),
                             load_corpus("music21-multitrack", max_per_composer=a.max_per_composer, progress=False))
        df = df[df.error == ""]
        tpn = df.tokens.sum() / df.notes.sum()
    print(json.dumps(bench_versions()), flush=True)
    print(f"config: {cfg}\nREMI tokens per note: {tpn:.3f}", flush=True)
    t = time.time()
    rows = decode_benchmark(cfg, tokens_per_note=tpn)
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out, index=False)
    print(rows.drop(columns=["device"]).round(2).to_string(index=False))
    print(f"wrote {out} ({len(rows)} rows) in {time.time() - t:.0f} s")
    return 0 if rows.error.eq("").all() else 1


if __name__ == "__main__":
    sys.exit(main())
