"""`maxact-card sites MODEL`: the probe sites of a model from its config alone. The model is built
on the meta device (no memory, no weights): only config.json, or a GGUF file's metadata, is read."""

from __future__ import annotations

from typing import Any, Optional

from .errors import ModelLoadError, ModelNotFoundError, first_line
from .report import HEADLINE_KINDS, KIND_ORDER


def model_config(spec: str, *, revision: Optional[str] = None, token: Optional[str] = None) -> Any:
    """The transformers config of a Hub repo (config.json alone), a local directory or a .gguf file;
    out-of-scope and remote-code models are refused as `audit` refuses them."""
    from .loading import check_config, local_path, looks_local, parse_config

    if looks_local(spec):
        path = local_path(spec)
        if path.is_file():
            return _config(lambda c: c.from_pretrained(str(path.parent), gguf_file=path.name), spec)
        try:
            text = (path / "config.json").read_text(encoding="utf-8")
        except OSError:
            raise ModelNotFoundError(f"{spec} has no config.json; pass a transformers checkpoint directory or a "
                                     ".gguf file") from None
    else:
        from .hub import Hub

        hub = Hub(token=token, progress=False)
        sha = hub.resolve_revision(spec, revision)
        text = hub.read_text(spec, "config.json", sha)
        if text is None:
            raise ModelNotFoundError(f"{spec} has no config.json at {sha[:12]} (a GGUF-only repo?); download its "
                                     ".gguf file and pass its path")
    cfg = parse_config(text, spec)
    check_config(cfg, spec, trust_remote_code=False)
    return _config(lambda c: c.for_model(**cfg), spec)


def _config(make, spec: str) -> Any:
    from transformers import AutoConfig

    try:
        return make(AutoConfig)
    except (ValueError, KeyError, OSError) as exc:
        first = first_line(exc)
        raise ModelLoadError(f"cannot read the config of {spec}: {first}; update transformers, or check the "
                             "checkpoint") from None


def meta_model(config: Any) -> Any:
    """The model of `config` on the meta device, as `audit` would load it (a vision-language model
    through its image-text class)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    with torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(config)
        except ValueError:
            return AutoModelForImageTextToText.from_config(config)


def describe(spec: str, *, revision: Optional[str] = None, token: Optional[str] = None, show_all: bool = False) -> str:
    from .measure.check import linear_inputs
    from .sites import find_sites

    config = model_config(spec, revision=revision, token=token)
    model = meta_model(config)
    sites = find_sites(model)
    paths = {id(m): n for n, m in model.named_modules()}

    def where(s) -> str:
        what = {"input": "input of", "experts": "inside (experts seam)"}.get(s.capture, "output of")
        return f"{what} {paths.get(id(s.module), '?')} ({type(s.module).__name__})"

    streams = max(s.streams for s in sites.sites)
    lines = [f"{spec}: {type(model).__name__} ({config.model_type}), {sites.num_layers} decoder layers"
             + (f", a residual of {streams} streams (hyper-connections; embed and residual measured over all)"
                if streams > 1 else "")]
    if show_all:
        lines += [f"  {s.name:<36} {'M' if s.kind in HEADLINE_KINDS else ' '}  {where(s)}" for s in sites.sites]
    else:
        by_kind: dict[str, list] = {}
        for s in sites.sites:
            by_kind.setdefault(s.kind, []).append(s)
        order = sorted(by_kind, key=lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER))
        width = max(len(k) for k in order) + 2
        lines.append(f"  {'site kind':<{width}}{'sites':>5}  {'in M':<5} first, and what is hooked")
        for k in order:
            first = by_kind[k][0]
            lines.append(f"  {k:<{width}}{len(by_kind[k]):>5}  {'yes' if k in HEADLINE_KINDS else 'no':<5} "
                         f"{first.name}: {where(first)}")
    moe = len({s.layer for s in sites.expert_sites})
    lines.append(f"M is the largest |a| over the sites of kinds {', '.join(HEADLINE_KINDS)}; the quant check "
                 f"quantizes {len(linear_inputs(sites))} linear-layer inputs"
                 + (f" and each expert's inputs in {moe} MoE layers" if moe else "")
                 + ". Nothing was downloaded but the config.")
    return "\n".join(lines)
