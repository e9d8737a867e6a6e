"""On a CUDA device: the same statistics as on the CPU, and hooks that never wait for the device.

These run where a GPU is present (they skip elsewhere); the CPU suite covers the same code paths.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from maxact_card.measure import Probe, measure, peak_of
from maxact_card.measure.check import linear_inputs
from maxact_card.measure.context import BatchContext
from maxact_card.measure.hooks import forward
from maxact_card.sites import find_sites
from models import ARCHS, tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

SAMPLES = [[1, 5, 9, 12, 40, 41, 42], [1, 22, 7, 30, 31], [1, 8, 8], [1, 50, 51, 52, 7, 60], [1, 3, 4, 5, 6, 7, 8, 9]]


def audit_on(device: str, arch: str):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = tiny_model(arch).to(device)
    return measure(model, find_sites(model), SAMPLES, 0, lambda i: f"w{i}", batch_size=2, hist_stride=1,
                   calib_indices=[0, 2])


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_cuda_statistics_match_the_cpu(arch):
    cpu, gpu = audit_on("cpu", arch), audit_on("cuda", arch)
    assert [s.name for s in gpu.sites] == [s.name for s in cpu.sites]
    for c, g in zip(cpu.sites, gpu.sites):
        assert g.count == c.count and g.nonfinite == c.nonfinite == 0, c.name
        assert g.absmax == pytest.approx(c.absmax, rel=1e-4), c.name
        assert g.mean == pytest.approx(c.mean, rel=1e-3, abs=1e-6), c.name
        gl, cl = g.absmax_location, c.absmax_location
        assert (gl.position, gl.token_id, gl.channel, gl.sign) == (cl.position, cl.token_id, cl.channel, cl.sign), c.name
        # Samples that share the prefix up to that position hold the same value (a tie), which
        # float rounding on the device may resolve to another of them.
        prefix = slice(0, cl.position + 1)
        assert gl.sample == cl.sample or SAMPLES[gl.sample][prefix] == SAMPLES[cl.sample][prefix], c.name
    assert peak_of(gpu.sites).site == peak_of(cpu.sites).site
    e2e_cpu = {e.format: e.delta_nll for e in cpu.quant.end_to_end}
    for e in gpu.quant.end_to_end:
        assert e.delta_nll == pytest.approx(e2e_cpu[e.format], abs=5e-3), e.format


@pytest.mark.parametrize("arch", ["llama", "qwen3_moe"])
def test_probe_hooks_add_no_device_sync(arch):
    model = tiny_model(arch).to("cuda")
    model_sites = find_sites(model)
    assert linear_inputs(model_sites)  # the sites exist on this architecture
    probe = Probe(model, model_sites, hist_stride=1)
    ids = torch.tensor([s + [0] * (8 - len(s)) for s in SAMPLES[:4]], device="cuda")
    mask = (ids != 0) | (torch.arange(8, device="cuda") == 0)
    ctx = BatchContext(mask, torch.arange(4, device="cuda"), ids)

    def syncs(hooks: bool) -> int:
        with warnings.catch_warnings(record=True) as seen, torch.inference_mode():
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                if hooks:
                    with probe.hooks(ctx):
                        forward(model, ids, mask.long())
                else:
                    forward(model, ids, mask.long())
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in seen)

    syncs(False)  # warm-up: lazy initialisation may synchronize once
    assert syncs(True) == syncs(False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_audit_on_cuda(dtype):
    model = tiny_model("llama").to("cuda", dtype)  # the float32 model's weights, rounded
    out = measure(model, find_sites(model), SAMPLES, 0, lambda i: f"w{i}", batch_size=None, calib_indices=[0, 2])
    ref = audit_on("cpu", "llama")
    assert peak_of(out.sites).abs == pytest.approx(peak_of(ref.sites).abs, rel=0.02)
    assert all(s.count == r.count and s.quantiles for s, r in zip(out.sites, ref.sites))
    assert all(math.isfinite(e.delta_nll) for e in out.quant.end_to_end)


@pytest.mark.parametrize("model_type", ["dory", "deepseek_v4", "cpmant", "cohere", "ergo"])
def test_the_sweeps_layouts_audit_on_cuda_as_on_the_cpu(model_type):
    """Looped layers (sites called again), multi-stream residuals, a prompt before the input and a
    mask of the model's own, a head that scales its logits, experts that repeat rows per route."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import coverage  # tools/coverage.py

    torch.backends.cuda.matmul.allow_tf32 = False
    runs = []
    for device in ("cpu", "cuda"):
        model = coverage.build(model_type).to(device)
        runs.append(measure(model, find_sites(model), coverage.SAMPLES, 0, str, batch_size=2, hist_stride=1,
                            calib_indices=[0, 2, 4]))
    cpu, gpu = runs
    for c, g in zip(cpu.sites, gpu.sites):
        assert (g.name, g.count, g.nonfinite) == (c.name, c.count, c.nonfinite)
        assert g.absmax == pytest.approx(c.absmax, rel=1e-4), c.name
        assert (g.absmax_location.stream, g.absmax_location.channel) == (c.absmax_location.stream,
                                                                         c.absmax_location.channel), c.name
    assert gpu.quant.baseline_nll == pytest.approx(cpu.quant.baseline_nll, rel=1e-4)
