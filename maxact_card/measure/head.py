"""Next-token logits for the loss, computed by the model's own output head.

The quant check's loss needs the logits of every position; a forward pass computes only the last
one's (`logits_to_keep=1`: a 262k vocabulary over 2,048 positions would be gigabytes). So the base
model's output (the hidden states the head reads) is kept, and the logits are computed afterwards,
a chunk of positions at a time.

What turns hidden states into logits differs by family: a softcap (Gemma 2/3), a logit scale
(Cohere), a divisor or multiplier (Granite, HyperCLOVA X, Falcon-H1), a cut vocabulary. Rather than
a table of these, the chunks go through the top-level model's own forward, with its base model's
forward replaced by one that returns the kept output with the chunk in place of the hidden states.
The first evaluation batch checks the result against the logits the forward pass returned.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import nn

from ..errors import UnsupportedArchitectureError
from ..sites import find_decoder

CHUNK = 128  # positions whose logits are computed at a time


def base_path(model: nn.Module) -> list[nn.Module]:
    """The modules from the top-level model's child down to the decoder: the top-level forward calls
    one of them for its hidden states (Llama's `model`; OPT's `model.decoder`, past `model`)."""
    decoder = find_decoder(model)
    path: list[nn.Module] = []
    module = model
    while module is not decoder:
        module = next((c for c in module.children() if c is decoder or any(m is decoder for m in c.modules())), None)
        if module is None:
            raise UnsupportedArchitectureError(f"{type(model).__name__} has no base model below its output head; "
                                               "run with --no-quant-check")
        path.append(module)
    return path


def _with_hidden(output, hidden: torch.Tensor):
    if isinstance(output, tuple):
        return (hidden,) + tuple(output[1:])
    fields = dict(output.items())
    fields["last_hidden_state"] = hidden
    return type(output)(**fields)


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.last_hidden_state


class OutputHead:
    """The model's head, run on the base model's output of the last forward pass."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.path = base_path(model)
        self.outputs: dict[int, object] = {}  # path index -> that module's output (last forward pass)
        self.verified = False

    @contextlib.contextmanager
    def keep(self) -> Iterator[None]:
        """Keeps the output of the base model of the forward passes inside the block."""
        def hook(i):
            def fn(module, args, output):
                self.outputs[i] = output
            return fn

        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self.path)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @property
    def base(self) -> tuple[nn.Module, object]:
        """The outermost path module the forward pass called, and its output."""
        i = min(self.outputs)
        return self.path[i], self.outputs[i]

    @property
    def hidden(self) -> torch.Tensor:
        return _hidden(self.base[1])

    def drop(self) -> None:
        self.outputs = {}

    @torch.no_grad()
    def logits(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The model's logits for `hidden` ([B, t, D], a slice of the kept hidden states)."""
        base, kept = self.base
        replaced = base.__dict__.get("forward")  # accelerate's device hooks live here
        base.forward = lambda *args, **kwargs: _with_hidden(kept, hidden)
        try:
            out = self.model(input_ids=input_ids, use_cache=False, logits_to_keep=0)
        finally:
            if replaced is None:
                del base.forward
            else:
                base.forward = replaced
        return out.logits if hasattr(out, "logits") else out[0]

    def chunks(self, input_ids: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """(start, logits of positions start..start+CHUNK) over every position but the last."""
        h = self.hidden
        for start in range(0, h.shape[1] - 1, CHUNK):
            stop = min(start + CHUNK, h.shape[1] - 1)
            yield start, self.logits(h[:, start:stop], input_ids[:, start:stop].to(h.device))

    @torch.no_grad()
    def verify(self, returned: Optional[torch.Tensor], input_ids: torch.Tensor) -> None:
        """Once: the head's logits of the last position equal those the forward pass returned."""
        if self.verified or returned is None:
            return
        h = self.hidden
        ours = self.logits(h[:, -1:], input_ids[:, -1:].to(h.device)).float()
        theirs = returned[:, -1:].float().to(ours.device)
        finite = theirs[torch.isfinite(theirs)]
        scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
        same = ours.shape == theirs.shape and torch.allclose(ours, theirs, rtol=1e-3, atol=1e-3 * scale, equal_nan=True)
        if not same:
            diff = float((ours - theirs).nan_to_num().abs().max()) if ours.shape == theirs.shape else float("nan")
            raise UnsupportedArchitectureError(
                f"the output head of {type(self.model).__name__} does not reproduce its logits when rerun on "
                f"the kept hidden states (largest difference {diff:.3g}), so the loss cannot be computed; "
                "run with --no-quant-check")
        self.verified = True
