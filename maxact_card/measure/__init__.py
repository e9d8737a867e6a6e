"""The measurement engine: hooks, batches, observers and the passes of an audit.

hooks.py (forward hooks) · context.py (what a forward's hooks share) ·
batches.py (plan, run, out-of-memory halving, starting batch size) · observers.py (the observer
interface: state tensors with declared merges) · site_stats.py, histogram.py (the probe's
statistics) · quant_observers.py, check.py (the INT8/FP8 check) · passes.py (the passes) ·
distributed.py (data parallelism) · results.py (M and the per-kind maxima).
"""

from .passes import HIST_STRIDE, Measurement, Probe, measure, no_progress
from .results import kind_maxima, peak_of, site_maxima

__all__ = ["HIST_STRIDE", "Measurement", "Probe", "kind_maxima", "measure", "no_progress", "peak_of", "site_maxima"]
