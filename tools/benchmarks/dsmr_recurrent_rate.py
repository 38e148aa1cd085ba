#!/usr/bin/env python
"""The DSMR control's recurrent phase at lower peak rates: does fine-tuning keep what the first phase learned?

With cpu-long's recipe (a first phase of 12,000 steps on windows of 384 tokens, then 2,000 recurrent steps on segments of
64 at rate 3e-3), every memory variant's best validation step is 0: the recurrent phase erodes the copying the first phase
learned. This runs `experiments/e04_dsmr` with cpu-long's parameters on the control pieces alone, seed 0, full memory, no
memory and compressed full-horizon memory (`fhcr_lowrank`), once per `recurrent_lr` given, and sets each beside the
committed cpu-long run of seed 0 (rate 3e-3) with the positive control's numbers (`dsmr_study.control_test`: loss on
repeats >= 1 segment back via memory, with it reset and of the no-memory model; other tokens; the ratio and net gain).
First phases and finished runs come from `data/cache/dsmr-runs` when cpu-long's run left them there (else they are
trained: ~20 minutes each on one core). Writes dsmr_recurrent_rate.csv beside this script.

    python tools/benchmarks/dsmr_recurrent_rate.py 3e-4 1e-3
"""
import sys, tempfile
from pathlib import Path
import pandas as pd
from sage_paper.core import device_info, versions
from sage_paper.dsmr_study import control_test
from sage_paper.reproduce import profile_params, run_notebook

ROOT = Path(__file__).resolve().parents[2]


def run(rate, out):
    "e04 at cpu-long's parameters, the control alone, seed 0, this recurrent rate; its figures/ folder."
    p = profile_params("cpu-long", "e04_dsmr") | dict(seeds=[0], other_variants=["full", "none", "fhcr_lowrank"], calibration=False,
         recurrent_lr=rate, scale_windows=[512], scale_batches=[8], scale_variants=["full"], profile="cpu-long", out_dir=str(out / "figures"))
    status, err = run_notebook(ROOT / "nbs/experiments/e04_dsmr.ipynb", p, out / "e04.ipynb")
    if status != "ok": raise RuntimeError(f"recurrent_lr={rate}: {err}")
    return out / "figures"


def rows(label, figs):
    rep, runs = (pd.read_csv(figs / f"{n}.csv") for n in ("dsmr_repeats", "dsmr_runs"))
    rep = rep[(rep.profile == "cpu-long") & (rep.seed == 0)]
    runs = runs[(runs.profile == "cpu-long") & (runs.corpus == "control") & (runs.seed == 0)].set_index("variant")
    for arm in ("full", "fhcr_lowrank"):
        c = control_test(rep, arm, n_boot=1000)
        yield dict(recurrent_lr=label, arm=arm, best_step=runs.loc[arm, "best_step"], final_train_loss=runs.loc[arm, "final_train_loss"],
                   none_best_step=runs.loc["none", "best_step"], via_memory=c["loss"], reset=c["loss_reset"], no_memory=c["loss_none"],
                   ratio=c["ratio"], net_gain_none=c["net_gain_none"], other=c["other"], other_no_memory=c["other_none"],
                   other_minus_no_memory=c["other"] - c["other_none"], verdict=c["verdict"])


def main():
    rates = [float(a) for a in sys.argv[1:]] or [3e-4]
    out = [*rows("3e-3 (committed cpu-long run)", ROOT / "figures")]
    for r in rates: out += [*rows(f"{r:g}", run(r, Path(tempfile.mkdtemp(prefix=f"dsmr_rate_{r:g}_"))))]
    v = versions()
    df = pd.DataFrame(out).assign(device=device_info()["device"], python=v["python"], torch=v.get("torch"), seed=0)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df.drop(columns=["device", "python", "torch"]).round(3).to_string(index=False))
    df.to_csv(Path(__file__).with_suffix(".csv"), index=False)
    print(f"wrote {Path(__file__).with_suffix('.csv')}")


if __name__ == "__main__":
    main()
