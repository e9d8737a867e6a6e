"""What a forward pass dispatches, seen through a TorchDispatchMode: the op count the engine's budget
is stated in, and a guard that no hook reads a value back to the host.

`OpCounter` counts the ops that launch work on an accelerator: views, no-op casts (the output is an
input's storage) and bare allocations do not count. `HostReads` lists, for the ops dispatched while
`inside` is set, those that make the device wait for the host or whose output shape depends on the
data (both stall a CUDA stream).
"""

from __future__ import annotations

import collections
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "alias",
              "lift_fresh", "set_", "resize_", "_unsafe_view"}
_HOST_READS = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "masked_select", "unique", "_unique",
               "_unique2", "unique_consecutive", "unique_dim", "bincount", "repeat_interleave", "nonzero_static"}


def _storages(tree: Any) -> set[int]:
    out = set()
    for t in tree_flatten(tree)[0]:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            try:
                out.add(t.untyped_storage().data_ptr())
            except RuntimeError:  # pragma: no cover - tensors without storage
                pass
    return out


class OpCounter(TorchDispatchMode):
    """Counts the ops that launch kernels, by name, while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in _NO_KERNEL:
            return out
        inplace = name.endswith("_") or "out" in (kwargs or {})
        produced = _storages(out)
        if not inplace and (produced <= _storages((args, kwargs)) if produced else func.is_view):
            return out  # a view, or an input's storage returned (a no-op cast)
        self.ops[name] += 1
        return out

    @property
    def total(self) -> int:
        return sum(self.ops.values())


class HostReads(TorchDispatchMode):
    """Records host reads and data-dependent shapes dispatched while `inside` is True."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if self.inside:
            bool_index = name == "index" and any(
                isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in tree_flatten(args[1:])[0])
            if name in _HOST_READS or bool_index:
                self.found.append(name)
        return func(*args, **(kwargs or {}))


def ops_per_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, accelerator: bool = True,
                    percentiles=(99.9, 99.99)) -> dict[str, int]:
    """Ops dispatched by one forward pass of `model` on this batch: bare (as the probe calls it), probed
    (hooks and fold; on the accelerator code path, or the CPU's), and each end-to-end format's
    quantized forward with the evaluation's hooks and loss. The probe's modes settle on a first
    forward, uncounted."""
    from ..quant import format_names
    from ..sites import find_sites
    from .check import Calibration, Evaluation, error_sites, linear_inputs
    from .expert_check import expert_inputs
    from .context import make_context
    from .experts import experts_seam
    from .head import OutputHead
    from .hooks import forward
    from .passes import Probe

    sites = find_sites(model)
    ctx = make_context(input_ids, attention_mask, torch.arange(input_ids.shape[0]), None)
    probe = Probe(model, sites, accelerator=accelerator)
    inputs = linear_inputs(sites)
    cal = Calibration(error_sites(sites, inputs), accelerator=accelerator, experts=expert_inputs(sites))
    out: dict[str, int] = {}
    with torch.inference_mode(), experts_seam(model, accelerator):
        forward(model, input_ids, attention_mask)  # lazy initialisation, outside the count
        with cal.hooks(ctx):
            probe.forward(ctx, attention_mask)
        for name, run in (("bare", lambda: forward(model, input_ids, attention_mask)),
                          ("probe", lambda: probe.forward(ctx, attention_mask))):
            with OpCounter() as c:
                run()
            out[name] = c.total
        formats = format_names(percentiles)  # every registered format, each as its end-to-end forward
        ev = Evaluation(error_sites(sites, inputs), cal.quantizers(percentiles), inputs, formats,
                        OutputHead(model), accelerator, experts=cal.experts,
                        expert_quantizers=cal.expert_quantizers(percentiles))
        for f, fmt in enumerate(formats, start=1):
            with OpCounter() as c:
                with ev.quantized_hooks(fmt, ctx):
                    forward(model, input_ids, attention_mask)
                ev.loss(f, ctx)
            out[fmt] = c.total
    return out
