#!/usr/bin/env python
"""Decoding-speed benchmark from the command line: the speed half of experiment e03 (`sage_paper.askvhs_study`).

Writes a CSV with the columns of `decode_benchmark.csv` (one row per variant, dtype, batch, context and mode: the
comparison with Hugging Face `generate()`, then the context sweep, each row with its bytes per step and the share of
the memory bandwidth measured in the same run) and prints the device and package versions. `--profile` takes the
speed parameters of an e03 profile (`sage_paper.reproduce.PROFILES`); any option given overrides it. Examples
(from the repository root):

    .venv/bin/python tools/decode_benchmark.py --profile cpu                     # what `make reproduce` measures on CPU
    .venv/bin/python tools/decode_benchmark.py --profile gpu                     # the GPU run: CUDA graphs, bf16, contexts to 16k
    .venv/bin/python tools/decode_benchmark.py --profile cpu --contexts --variants MHA --dtypes bfloat16   # no sweep
    .venv/bin/python tools/decode_benchmark.py --d-model 128 --n-layer 2 --new-tokens 32 --repeats 1 --out /tmp/b.csv
"""
import argparse, json, sys, time
from pathlib import Path

SPEED_FIELDS = {  # e03 parameter -> DecodeBenchConfig field
    "d_model": "d_model", "n_layer": "n_layer", "n_head": "n_head", "vocab_size": "vocab_size", "prompt_len": "prompt_len",
    "new_tokens": "new_tokens", "batches": "batches", "speed_variants": "variants", "modes": "modes", "dtypes": "dtypes",
    "large_batch_runs": "large_batch_runs",
    "hf_variants": "hf_variants", "contexts": "contexts", "sweep_batches": "sweep_batches", "sweep_variants": "sweep_variants",
    "sweep_modes": "sweep_modes", "sweep_dtype": "sweep_dtype", "sweep_new_tokens": "sweep_new_tokens", "repeats": "repeats",
    "threads": "threads", "seed": "seed"}


def profile_config(profile):
    "DecodeBenchConfig keyword arguments of an e03 profile (the notebook's own defaults for 'smoke')."
    import ast
    from sage_paper.core import repo_root
    from sage_paper.reproduce import profile_params
    nb = json.loads((repo_root(required=True) / "nbs/experiments/e03_askvhs.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    params = {}
    for node in ast.parse("".join(cell["source"])).body:  # the notebook's defaults: literals only
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            params[node.targets[0].id] = ast.literal_eval(node.value)
    params.update(profile_params(profile, "e03_askvhs"))
    return {SPEED_FIELDS[k]: v for k, v in params.items() if k in SPEED_FIELDS}


def main(argv=None):
    from sage_paper.askvhs_study import (BENCH_MODES, VARIANTS, POOLED_VARIANTS, DecodeBenchConfig, decode_benchmark,
                                         bench_versions)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", choices=["smoke", "cpu", "gpu"], help="start from the speed parameters of this e03 profile")
    ap.add_argument("--d-model", type=int)
    ap.add_argument("--n-layer", type=int)
    ap.add_argument("--n-head", type=int)
    ap.add_argument("--vocab-size", type=int)
    ap.add_argument("--prompt-len", type=int)
    ap.add_argument("--new-tokens", type=int)
    ap.add_argument("--batches", type=int, nargs="+")
    ap.add_argument("--variants", nargs="+", help=f"from {list(VARIANTS) + list(POOLED_VARIANTS)}")
    ap.add_argument("--modes", nargs="+", help=f"from {list(BENCH_MODES)}")
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--large-batch-runs", nargs="*", help="mode/dtype pairs run at batches above 1 (default: all)")
    ap.add_argument("--hf-variants", nargs="+")
    ap.add_argument("--contexts", type=int, nargs="*", help="context sweep (none given: no sweep)")
    ap.add_argument("--sweep-batches", type=int, nargs="+")
    ap.add_argument("--sweep-variants", nargs="+")
    ap.add_argument("--sweep-modes", nargs="+")
    ap.add_argument("--sweep-dtype", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--sweep-new-tokens", type=int, nargs=2)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--threads", type=int, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--tokens-per-note", type=float, nargs=3, metavar=("REMI", "CPWORD", "OCTUPLE"),
                    help="tokens per note of each tokenizer; default: measured on the music21 multi-track corpus")
    ap.add_argument("--max-per-composer", type=int, default=4, help="works per composer for the tokens per note")
    ap.add_argument("--out", default="runs/cli/decode_benchmark.csv", help="CSV to write (runs/ is not tracked)")
    a = ap.parse_args(argv)
    kw = profile_config(a.profile) if a.profile else {}
    for k, v in vars(a).items():
        if k in DecodeBenchConfig.__dataclass_fields__ and v is not None: kw[k] = v
    if kw.get("threads") == 0: kw["threads"] = None
    cfg = DecodeBenchConfig(**kw)
    tpn = dict(zip(("REMI", "CPWord", "Octuple"), a.tokens_per_note)) if a.tokens_per_note else None
    if tpn is None:
        from sage_paper.data import load_corpus
        from sage_paper.tokenizer import spec_for, tokens_per_note
        man = load_corpus("music21-multitrack", max_per_composer=a.max_per_composer, progress=False)
        tpn = {}
        for kind in ("REMI", "CPWord", "Octuple"):
            df = tokens_per_note(spec_for("music21-multitrack", kind).build(), man)
            df = df[df.error == ""]
            tpn[kind] = df.tokens.sum() / df.notes.sum()
    print(json.dumps(bench_versions()), flush=True)
    print(f"config: {cfg}\ntokens per note: {tpn}", flush=True)
    t = time.time()
    rows = decode_benchmark(cfg, tokens_per_note=tpn)
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out, index=False)
    cols = ["variant", "dtype", "batch", "context", "mode", "tokens_per_s", "ms_per_token", "ms_per_note", "bw_share", "tokens_match", "error"]
    print(rows[cols].round(3).to_string(index=False))
    print(f"wrote {out} ({len(rows)} rows) in {time.time() - t:.0f} s")
    return 0 if rows.error.eq("").all() else 1


if __name__ == "__main__":
    sys.exit(main())
