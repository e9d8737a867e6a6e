"""Samples share a batch only where right padding leaves the real tokens' activations alone."""

from __future__ import annotations

import sys
from pathlib import Path

from maxact_card.measure import measure
from maxact_card.measure.padding import pads_cleanly
from maxact_card.sites import find_sites

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import coverage  # noqa: E402  (tools/coverage.py)


def test_a_model_that_ignores_the_mask_runs_each_sample_alone():
    """CPM-Ant makes its own mask from the ids (for left padding) and attends both ways: batched,
    its numbers would depend on the batch size."""
    model = coverage.build("cpmant")
    assert not pads_cleanly(model, coverage.SAMPLES, 0)
    notes = []
    sites = find_sites(model)
    batched = measure(model, sites, coverage.SAMPLES, 0, str, batch_size=2, note=notes.append)
    alone = measure(model, sites, coverage.SAMPLES, 0, str, batch_size=1, note=notes.append)
    assert batched.sites == alone.sites
    assert len(notes) == 1 and "padding changes the activations" in notes[0] and "--batch-size 1" in notes[0]


def test_a_model_that_follows_the_mask_keeps_its_batches():
    model = coverage.build("llama")
    assert pads_cleanly(model, coverage.SAMPLES, 0)
    assert pads_cleanly(model, [[1, 2, 3], [4, 5, 6]], 0)  # one length: never padded
    notes = []
    measure(model, find_sites(model), coverage.SAMPLES, 0, str, batch_size=None, note=notes.append)
    assert notes == []
