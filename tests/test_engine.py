"""The measurement engine: one observer interface, the accelerator path (equal to the CPU's, no host
reads inside a hook, within its op budget), and merging across processes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from maxact_card.measure import measure
from maxact_card.measure import hooks as hooks_module
from maxact_card.measure.context import BatchContext
from maxact_card.measure.dispatch import HostReads, ops_per_forward
from maxact_card.measure.observers import KeepBest, Merge, Observer
from maxact_card.measure.quant_observers import ErrorObserver, LossObserver, RangeObserver
from maxact_card.measure.site_stats import SiteBank, SiteInfo
from maxact_card.quant import Quantizer, format_names
from maxact_card.sites import find_sites
from models import tiny_model

TOK, CH = 7, 11
SAMPLES = [[1, 5, 9, 12, 40], [1, 22, TOK, 30, 31, 32, 33], [1, 8, 8], [1, 50, 51, 52, TOK, 60], [1, 3, 4],
           [1, 9, 9, 9, 9, 9, 9, 9, 9]]


def planted(arch: str, *, nan: bool = False):
    """A tiny model whose token TOK carries a massive activation (and, with `nan`, a NaN)."""
    model = tiny_model(arch)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.mul_(0.01)
        emb[TOK, CH] = 3000.0
        if nan:
            emb[TOK, CH + 1] = float("nan")
    return model


def run(model, accelerator, **kw):
    return measure(model, find_sites(model), SAMPLES, 0, lambda i: f"w{i}", batch_size=2, hist_stride=2,
                   accelerator=accelerator, **kw)


@pytest.mark.parametrize("arch,nan", [("llama", False), ("llama", True), ("qwen3_moe", False), ("gemma2", True)])
def test_accelerator_path_gives_the_cpu_paths_statistics(arch, nan):
    """The path a GPU runs (forced here on the CPU) and the CPU's own: the same statistics, field for
    field; the per-site quantization errors within float rounding (the CPU sums per token first)."""
    model = planted(arch, nan=nan)
    cpu = run(model, False, calib_indices=[0, 2, 4])
    dev = run(model, True, calib_indices=[0, 2, 4])
    # Per-expert sites: grouped_mm's kernels on the accelerator path, eager's loop on the CPU's (last bits).
    if not any(".experts." in s.name for s in cpu.sites):
        assert dev.sites == cpu.sites
    for d, c in zip(dev.sites, cpu.sites):
        assert d.name == c.name and d.absmax == pytest.approx(c.absmax, rel=1e-5)
    embed = {s.name: s for s in dev.sites}["embed"]
    assert embed.massive == 2 and embed.absmax == pytest.approx(3000.0 * (32**0.5 if arch.startswith("gemma") else 1), rel=1e-6)
    assert (embed.nonfinite > 0) == nan
    for a, b in zip(cpu.quant.sites, dev.quant.sites):
        assert (a.site, a.format, a.clip_rate) == (b.site, b.format, b.clip_rate)
        # elementwise float32 sums there, per-token float64 sums here: 1e-6 dB is a ratio's 2e-7
        assert a.sqnr_db == pytest.approx(b.sqnr_db, rel=1e-5, abs=1e-6)
    assert [repr(e.delta_nll) for e in cpu.quant.end_to_end] == [repr(e.delta_nll) for e in dev.quant.end_to_end]
    assert [v.verdict for v in cpu.quant.verdicts] == [v.verdict for v in dev.quant.verdicts]


@pytest.mark.parametrize("arch", ["llama", "qwen3_moe"])
def test_no_hook_reads_the_host_or_makes_a_data_dependent_shape(arch, monkeypatch):
    """Every hook of the probed forward (in every mode: massive and NaN rows make the probe run its
    costlier modes) and of the check's evaluation forwards, on the accelerator path, under a dispatch
    mode that records host reads (.item(), bool(tensor)) and data-dependent shapes."""
    reads = HostReads()

    def inside(call):
        def wrapped(fn, x, ctx):
            reads.inside = True
            try:
                call(fn, x, ctx)
            finally:
                reads.inside = False
        return wrapped

    monkeypatch.setattr(hooks_module, "_observe", inside(hooks_module._keep))
    monkeypatch.setattr(hooks_module, "_keep", inside(hooks_module._keep))
    quantize = Quantizer.__call__

    def quantizing(self, x):
        reads.inside = True
        try:
            return quantize(self, x)
        finally:
            reads.inside = False

    monkeypatch.setattr(Quantizer, "__call__", quantizing)
    with reads:
        out = run(planted(arch, nan=True), True, calib_indices=[0, 2, 4])
    assert out.quant is not None and any(s.massive for s in out.sites) and any(s.nonfinite for s in out.sites)
    assert reads.found == []


def test_site_bank_runs_on_meta_tensors_in_every_mode():
    """Meta tensors have no data: any host read or data-dependent shape inside update raises."""
    B, T, C = 2, 5, 8
    ctx = BatchContext(torch.ones(B, T, dtype=torch.bool, device="meta"), torch.arange(B, device="meta"),
                       torch.zeros(B, T, dtype=torch.long, device="meta"))
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        bank = SiteBank([SiteInfo("a", "residual", 0, channels=True), SiteInfo("b", "mlp", 0)], "meta",
                        hist_stride=2, accelerator=True)
        bank.set_mode(1, "exact")
        x = torch.empty(B, T, C, dtype=dtype, device="meta")
        bank.update_site(0, x, ctx)
        bank.update_site(1, x, ctx)
        assert bank._scratch  # rows were written, nothing was read


def test_probed_forward_within_the_op_budget():
    """On the SmolLM2-135M shape (random weights, so no row needs a costlier mode), on the accelerator
    code path: the probe dispatches at most 2x the bare forward's ops, each end-to-end format's
    quantized forward (with the evaluation's hooks and loss) at most 3x."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
        ids = torch.randint(3, 1000, (2, 16))
        mask = torch.ones_like(ids)
        mask[1, 12:] = 0
        ops = ops_per_forward(model, ids, mask)
        assert ops["probe"] <= 2 * ops["bare"], (dtype, ops)
        assert set(ops) == {"bare", "probe", *format_names((99.9, 99.99))}
        for fmt in format_names((99.9, 99.99)):
            assert ops[fmt] <= 3 * ops["bare"], (dtype, fmt, ops)


# -- the observer interface ---------------------------------------------------------------------------
class Pair(Observer):
    MERGES = {"total": Merge.SUM, "hi": Merge.MAX, "lo": Merge.MIN}
    GROUPS = (KeepBest(2, "score", "key", ("score", "key", "payload")),)

    def __init__(self):
        self.total = torch.zeros(())
        self.hi = torch.tensor(-math.inf)
        self.lo = torch.tensor(math.inf)
        self.score = torch.full((2,), -1.0)
        self.key = torch.full((2,), 2**62)
        self.payload = torch.zeros(2, 3)

    def update(self, x, ctx=None):
        self.total += x.sum()
        torch.maximum(self.hi, x.max(), out=self.hi)
        torch.minimum(self.lo, x.min(), out=self.lo)
        idx = torch.arange(x.numel())
        self.keep(self.GROUPS[0], {"score": x, "key": idx + 100 * int(self.total.numel()),
                                   "payload": torch.stack([x, x, x], -1)})


def test_observer_merge_keeps_the_best_by_score_then_key():
    a, b = Pair(), Pair()
    a.update(torch.tensor([5.0, 1.0, 5.0]))  # keys 100, 101, 102
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = Pair()
    c.update(torch.tensor([5.0, 7.0]))  # keys 100 (a tie with a's first) and 101
    a.merge(c)
    assert a.total.item() == 23.0 and a.hi.item() == 7.0 and a.lo.item() == 1.0
    assert a.score.tolist() == [7.0, 5.0] and a.key.tolist() == [101, 100]


def _bank_over(batches, infos):
    bank = SiteBank(infos, hist_stride=1, accelerator=True)
    for x, ctx in batches:
        bank.update_site(0, x, ctx)
        for i, mode in bank.fold(ctx):
            bank.set_mode(i, mode)
            bank.update_site(0, x, ctx)
        assert bank.fold(ctx) == [] if bank._fired[0] is not None else True
    return bank


def test_banks_merged_from_split_batches_equal_one_bank_over_all():
    """What a data-parallel run does: each process keeps the batches it ran, the states merge."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for b in range(4):
        x = torch.randn(2, 6, 10, generator=g) * 3
        x[:, 0, 3] = 500.0  # every sample's first token ties: the earliest sample must win
        valid = torch.ones(2, 6, dtype=torch.bool)
        valid[1, 4:] = False
        batches.append((x, BatchContext(valid, torch.tensor([2 * b + 1, 2 * b]), torch.full((2, 6), 7))))
    infos = [SiteInfo("s", "residual", 0, channels=True)]
    whole = _bank_over(batches, infos)
    parts = [_bank_over(batches[r::2], infos) for r in range(2)]
    parts[0].merge(parts[1])
    w, m = whole.state_dict(), parts[0].state_dict()
    for name in w:
        if name in ("sum", "sumsq"):
            assert torch.allclose(w[name], m[name], rtol=1e-12, atol=0), name
        else:
            assert torch.equal(w[name], m[name]), name
    assert whole.result()[0] == dataclasses.replace(parts[0].result()[0], mean=whole.result()[0].mean,
                                                    std=whole.result()[0].std, rms=whole.result()[0].rms)
    assert whole.result()[0].absmax_location.sample == 0  # sample 0 (batch 0, row 1) among the tied


def test_check_observers_merge_as_sums_and_max():
    ctx = BatchContext(torch.ones(1, 3, dtype=torch.bool), torch.tensor([0]), torch.zeros(1, 3, dtype=torch.long))
    x = torch.tensor([[[1.0, -4.0], [2.0, 0.5], [3.0, 0.0]]])
    one, two = RangeObserver(), RangeObserver()
    one.update(x, ctx)
    two.update(x * 2, ctx)
    one.merge(two)
    assert one.result() == 8.0 and one.hist.sum().item() == 12
    e1, e2 = ErrorObserver(), ErrorObserver()
    e1.update(x, ctx, torch.zeros_like(x))
    e2.update(x, ctx, x)
    e1.merge(e2)
    assert e1.result()["count"] == 12 and e1.result()["sqnr_db"] == pytest.approx(10 * math.log10(2))
    l1, l2 = LossObserver(), LossObserver()
    l1.update(torch.zeros(1, 2, 4), torch.tensor([[0, 1]]))
    l2.update(torch.zeros(1, 1, 4), torch.tensor([[2]]))
    l1.merge(l2)
    assert l1.result() == pytest.approx(math.log(4)) and l1.sums[1].item() == 3


def test_per_sample_state_merges_and_feeds_the_bootstrap():
    """The block-amax range of NVFP4, per-sample losses and per-sample maxima: exact by hand."""
    ctx = BatchContext(torch.tensor([[True, True, False]]), torch.tensor([1]), torch.zeros(1, 3, dtype=torch.long))
    x = torch.zeros(1, 3, 32)
    x[0, 0, 3] = 600.0  # block 0 of token 0: amax 600
    x[0, 0, 20] = -0.5  # block 1 of token 0: amax 0.5
    x[0, 1, :16] = 0.01  # token 1, block 0: amax 0.01; block 1 all zero (not counted)
    x[0, 2, 0] = 1e-6  # padding: never counted
    r = RangeObserver()
    r.update(x, ctx)
    assert r.block_max.item() == 600.0 and r.block_min.item() == pytest.approx(0.01)
    assert r.block_span() == pytest.approx(600.0 / 0.01)
    other = RangeObserver()
    other.update(torch.full((1, 1, 16), 1e-3), BatchContext(torch.ones(1, 1, dtype=torch.bool), torch.tensor([0]),
                                                            torch.zeros(1, 1, dtype=torch.long)))
    r.merge(other)
    assert r.block_span() == pytest.approx(600.0 / 1e-3)
    # Per-sample losses: rows land on their corpus samples (3 and 0), the total is their sum.
    loss = LossObserver(samples=4)
    logits = torch.zeros(2, 2, 4)
    logits[1, :, 1] = math.log(3.0)  # p(1) = 3/6 on sample 0's row
    loss.update(logits, torch.tensor([[0, 1], [1, 1]]), torch.tensor([[True, False], [True, True]]),
                torch.tensor([3, 0]))
    assert loss.per_sample[3].tolist() == [pytest.approx(math.log(4)), 1.0]
    assert loss.per_sample[0].tolist() == [pytest.approx(2 * math.log(2)), 2.0]
    assert loss.per_sample[1:3].abs().sum().item() == 0 and torch.equal(loss.sums, loss.per_sample.sum(0))
