"""Cost of the bootstrap intervals an audit computes once at its end (CPU, float64).

    python benchmarks/bench_bootstrap.py [--samples 512] [--formats 8] [--resamples 1000]

Prints the median of 5 runs of `delta_nll_intervals` (every end-to-end format at once) and of
`max_interval` (M), on synthetic per-sample rows of the shape the engine keeps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from maxact_card.quant.uncertainty import delta_nll_intervals, max_interval


def median_ms(fn, runs: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--formats", type=int, default=8)
    ap.add_argument("--resamples", type=int, default=1000)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    count = torch.randint(20, 200, (a.samples,), generator=g).double()
    base = torch.stack([2.5 * count, count], dim=-1)
    fmts = torch.stack([torch.stack([base[:, 0] + 0.02 * k * count, count], dim=-1) for k in range(a.formats)])
    maxima = torch.rand(a.samples, generator=g, dtype=torch.float64).tolist()
    d = median_ms(lambda: delta_nll_intervals(base, fmts, resamples=a.resamples))
    m = median_ms(lambda: max_interval(maxima, resamples=a.resamples))
    print(f"{a.samples} samples, {a.formats} formats, {a.resamples} resamples, {torch.get_num_threads()} threads: "
          f"delta_nll_intervals {d:.1f} ms, max_interval {m:.1f} ms (median of 5)")


if __name__ == "__main__":
    main()
