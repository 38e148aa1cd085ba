"""The benchmarks' one timer: CPU microseconds per call, a low quantile of repeats (robust to other processes on a shared machine)."""
import time


def us_per_call(f, n:int, reps:int, keep:int, warmup:int)->float:
    "CPU microseconds per call of f after `warmup` calls: the `keep`-th lowest (0-based) of `reps` repeats of n calls."
    for _ in range(warmup): f()
    ts = []
    for _ in range(reps):
        t0 = time.process_time()
        for _ in range(n): f()
        ts.append((time.process_time() - t0) / n * 1e6)
    return sorted(ts)[keep]
