"""The INT8/FP8 check's wiring: which tensors are quantized, and the hooks of its two passes.

Pass 1 (calibration samples): the probe, plus a range observer on every quantized site.
Pass 2 (evaluation samples): each batch runs unquantized (the probe, the per-site errors and the
baseline loss read it), then once per end-to-end format with every linear layer's input
fake-quantized. The data is read once; each forward of a batch has exactly the shapes of the
unquantized one, so an identity quantizer gives Delta NLL = 0.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from ..quant import Quantizer, RowSums, build_verdicts, end_to_end, recommendation, site_quantizers
from ..quant.blocks import NVFP4_SPAN_LIMIT
from ..quant.uncertainty import delta_nll_intervals
from ..report import LINEAR_INPUT_SUFFIXES, BlockSpan, QuantReport, SiteQuantError
from ..sites import DOWN_NAMES, ModelSites, Site, is_fused
from .context import BatchContext
from .expert_check import ExpertCheck, ExpertInputs, ExpertQuantizer
from .head import OutputHead
from .hooks import hooked
from .observers import Observer
from .quant_observers import ErrorObserver, LossObserver, RangeObserver

# Probe sites whose own quantization error is reported (besides every linear layer's input).
ERROR_KINDS = ("attn", "mlp", "residual")
# Linear layers that read the same tensor as a sibling: measured once, under the sibling's name.
SHARED_INPUT = {"k_proj": "q_proj", "v_proj": "q_proj", "up_proj": "gate_proj"}


@dataclass(frozen=True)
class LinearInput:
    """The input of one or more linear layers that read the same tensor."""

    site: Site  # pre-hook on the first linear; its activation is the shared input
    linears: tuple[nn.Module, ...]


def linear_inputs(model_sites: ModelSites) -> list[LinearInput]:
    """Every attention/mixer/MLP linear layer's input (nn.Linear, GPT-2's Conv1D), grouped where
    siblings share it.

    Fused experts (3-D weights) are quantized per expert inside the experts seam (expert_check.py);
    other experts modules without linear layers are quantized at their common input."""
    from transformers.pytorch_utils import Conv1D

    out: list[LinearInput] = []
    for b in model_sites.blocks:
        groups: dict[str, list[nn.Module]] = {}
        for path, mod in b.module.named_modules():
            top = path.split(".")[0]
            if not isinstance(mod, (nn.Linear, Conv1D)) or top in ("experts", "gate", "router") or \
                    (b.parts and top not in b.parts):
                continue
            leaf = path.rsplit(".", 1)[-1]
            owner = path[: len(path) - len(leaf)] + SHARED_INPUT.get(leaf, leaf)
            if not isinstance(_submodule(b.module, owner), (nn.Linear, Conv1D)):
                owner = path
            groups.setdefault(owner, []).append(mod)
        experts = getattr(b.module, "experts", None)
        if isinstance(experts, nn.Module) and not isinstance(experts, nn.ModuleList) and not is_fused(experts):
            groups["experts"] = [experts]  # fused experts: each expert's inputs (expert_check.py)
        for owner, members in groups.items():
            down = b.kind == "mlp" and owner in DOWN_NAMES
            name = f"{b.name}.down_in" if down else f"{b.name}.{owner}.in"
            site = Site(name, "linear_in", b.layer, _submodule(b.module, owner), capture="input")
            out.append(LinearInput(site, tuple(members)))
    return out


def _submodule(block: nn.Module, path: str) -> Optional[nn.Module]:
    try:
        return block.get_submodule(path)
    except AttributeError:
        return None


def error_sites(model_sites: ModelSites, inputs: Sequence[LinearInput]) -> list[Site]:
    return [s for s in model_sites.sites if s.kind in ERROR_KINDS] + [li.site for li in inputs]


class Calibration:
    """max |a| and log-histogram of each quantized site over the calibration samples."""

    def __init__(self, sites: Sequence[Site], *, accelerator: Optional[bool] = None,
                 experts: Sequence[ExpertInputs] = ()) -> None:
        self.sites = list(sites)
        self.ranges = [RangeObserver(accelerator=accelerator) for _ in self.sites]
        self.experts = ExpertCheck(experts, accelerator=accelerator)

    def observers(self) -> list[Observer]:
        return list(self.ranges) + self.experts.observers()

    @contextlib.contextmanager
    def hooks(self, ctx: BatchContext) -> Iterator[None]:
        with hooked(self.sites, [r.update for r in self.ranges], ctx), self.experts.calibration_taps(ctx):
            yield

    def block_spans(self) -> dict[str, float]:
        return {**{site.name: r.block_span() for site, r in zip(self.sites, self.ranges)}, **self.experts.block_spans()}

    def uncalibrated(self) -> dict[int, tuple[int, ...]]:
        """MoE layer -> the experts no calibration token was routed to."""
        return self.experts.uncalibrated()

    def expert_quantizers(self, percentiles: Sequence[float]) -> dict[str, tuple[ExpertQuantizer, ...]]:
        return self.experts.quantizers(percentiles)

    def quantizers(self, percentiles: Sequence[float]) -> dict[str, tuple[Quantizer, ...]]:
        out = {}
        for site, r in zip(self.sites, self.ranges):
            # A site that saw no finite value (all NaN/Inf) has no usable scale: its quantizers
            # output zeros, and the audit's verdicts are unsafe anyway.
            values = r.quantiles({f"p{p:g}": p / 100 for p in percentiles})
            absmax = r.absmax.float()
            clip = {p: min(values.get(f"p{p:g}", 0.0), float(absmax)) for p in percentiles}
            out[site.name] = site_quantizers(absmax, clip, device=absmax.device)
        return out


@dataclass
class Evaluation:
    """Per-site errors and the baseline loss of the unquantized forward, the loss of each format's."""

    sites: list[Site]
    quantizers: dict[str, tuple[Quantizer, ...]]
    inputs: list[LinearInput]
    e2e_formats: tuple[str, ...]
    head: OutputHead
    accelerator: Optional[bool] = None  # True: the accelerator path on the CPU too (no per-token shortcut)
    samples: int = 0  # corpus samples: the losses are kept per sample too
    experts: ExpertCheck = field(default_factory=lambda: ExpertCheck(()))
    expert_quantizers: dict = field(default_factory=dict)  # site name -> tuple[ExpertQuantizer, ...]
    errors: dict = field(init=False)
    losses: list = field(init=False)

    def __post_init__(self) -> None:
        self.errors = {(s.name, q.name): ErrorObserver() for s in self.sites for q in self.quantizers.get(s.name, ())}
        self.errors.update({(n, q.name): ErrorObserver() for n, _ in self.experts.names
                            for q in self.expert_quantizers.get(n, ())})
        self.losses = [LossObserver(samples=self.samples) for _ in range(1 + len(self.e2e_formats))]

    def observers(self) -> list[Observer]:
        return list(self.errors.values()) + self.losses

    @contextlib.contextmanager
    def baseline_hooks(self, ctx: BatchContext) -> Iterator[None]:
        with hooked(self.sites, [self._error_fn(s) for s in self.sites], ctx), \
                self.experts.error_taps(self.expert_quantizers, self.errors, ctx), self.head.keep():
            yield

    def site_layers(self) -> dict[str, Optional[int]]:
        return {**{s.name: s.layer for s in self.sites}, **dict(self.experts.names)}

    @contextlib.contextmanager
    def quantized_hooks(self, fmt: str, ctx: BatchContext) -> Iterator[None]:
        """Every linear layer's input fake-quantized with `fmt`, each with its own calibrated scale;
        siblings that read the same tensor share one quantized copy."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.head.keep())
            for li in self.inputs:
                q = next(q for q in self.quantizers[li.site.name] if q.name == fmt)
                stack.enter_context(_quantize_inputs(li.linears, q))
            stack.enter_context(self.experts.quantize_taps(self.expert_quantizers, fmt))
            yield

    def _error_fn(self, site: Site) -> Callable[[torch.Tensor, BatchContext], None]:
        qs = self.quantizers.get(site.name, ())

        def fn(x: torch.Tensor, ctx: BatchContext) -> None:
            cpu = x.device.type == "cpu" and not self.accelerator
            rows = RowSums.of(x) if cpu else None  # shared by every format
            for q in qs:
                self.errors[(site.name, q.name)].update(x, ctx, q(x), q.clip_threshold, rows, elementwise=not cpu)

        return fn

    def loss(self, copy: int, ctx: BatchContext, returned: Optional[torch.Tensor] = None) -> None:
        """Next-token NLL from the base model's output the head kept (logits in chunks). `returned`:
        the logits the forward pass returned, checked once against the head's."""
        self.head.verify(returned, ctx.input_ids)
        ids, valid = ctx.input_ids, ctx.valid
        targets, mask = ids[:, 1:], valid[:, 1:] & valid[:, :-1]
        for start, logits in self.head.chunks(ids):
            stop = start + logits.shape[1]
            self.losses[copy].update(logits, targets[:, start:stop].to(logits.device),
                                     mask[:, start:stop].to(logits.device), ctx.sample_index)
        self.head.drop()

    def report(self, calib_samples: int, eval_samples: int, eval_tokens: int, site_layers: dict[str, Optional[int]],
               peak_abs: Optional[float], site_absmax: dict[str, float], nonfinite: int,
               eval_indices: Sequence[int] = (), seed: int = 0,
               spans: Optional[dict[str, float]] = None) -> QuantReport:
        """The check's report; with `eval_indices` (the evaluation samples), each end-to-end delta
        NLL gets a 95% bootstrap interval over those samples, and a verdict that interval leaves
        open reads `uncertain`."""
        site_errors = []
        for (name, fmt), obs in self.errors.items():
            r = obs.result()
            site_errors.append(SiteQuantError(site=name, layer=site_layers[name], format=fmt, sqnr_db=r["sqnr_db"],
                                              rel_rmse=r["rel_rmse"], rel_mae=r["rel_mae"], clip_rate=r["clip_rate"]))
        base = self.losses[0].result()
        e2e = tuple(end_to_end(fmt, obs.result(), base) for fmt, obs in zip(self.e2e_formats, self.losses[1:]))
        linear = [e for e in site_errors if e.site.endswith(LINEAR_INPUT_SUFFIXES)]
        intervals = None
        if len(eval_indices) and self.losses[0].per_sample.numel():
            idx = torch.as_tensor(list(eval_indices), dtype=torch.long)
            base_rows = self.losses[0].per_sample.cpu().double()[idx]
            rows = torch.stack([obs.per_sample.cpu().double()[idx] for obs in self.losses[1:]])
            intervals = dict(zip(self.e2e_formats, delta_nll_intervals(base_rows, rows, seed=seed)))
        verdicts = build_verdicts(linear, e2e, peak_abs, site_absmax, nonfinite, intervals=intervals)
        return QuantReport(
            calib_samples=calib_samples,
            eval_samples=eval_samples,
            eval_tokens=eval_tokens,
            baseline_nll=base,
            baseline_ppl=math.exp(base) if base < 700 else math.inf,
            sites=tuple(site_errors),
            end_to_end=e2e,
            verdicts=verdicts,
            recommendation=recommendation(verdicts, linear),
            nvfp4_spans=tuple(BlockSpan(name, v, v > NVFP4_SPAN_LIMIT) for name, v in (spans or {}).items()
                              if name.endswith(LINEAR_INPUT_SUFFIXES)),
        )


@contextlib.contextmanager
def _quantize_inputs(linears: Sequence[nn.Module], q: Quantizer) -> Iterator[None]:
    """Pre-hooks feeding q(input) to each of `linears`; one quantization per input tensor."""
    last: list = [None, None]  # the input seen last, and its quantized copy

    def quantized(x: torch.Tensor) -> torch.Tensor:
        if last[0] is not x:
            last[0], last[1] = x, q(x)
        return last[1]

    def pre_hook(module, args, kwargs):
        if args:
            return (quantized(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": quantized(kwargs["hidden_states"])}

    handles = [lin.register_forward_pre_hook(pre_hook, with_kwargs=True) for lin in linears]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        last.clear()
