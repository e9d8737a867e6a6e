"""The audit pipeline: resolve -> load -> corpus -> probe -> quant check -> report."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import __version__
from .options import AuditOptions
from .report import SCHEMA_VERSION, ModelRecord, Report, Timings

def default_output_dir(model: str) -> Path:
    name = Path(model.rstrip("/")).name or "model"
    if name.endswith(".gguf"):
        name = name[: -len(".gguf")]
    return Path("maxact-" + re.sub(r"[^A-Za-z0-9._-]+", "-", name))


def reproduce_command(o: AuditOptions, revision: Optional[str], name: str) -> str:
    """The command that measures the same again, with the model by its `name` and the corpus by its file
    name (no path of this machine)."""
    parts = ["maxact-card", "audit", name]
    if revision:
        parts += ["--revision", revision]
    parts += ["--corpus", corpus_arg(o.corpus), "--samples", str(o.samples), "--max-seq-len", str(o.max_seq_len)]
    parts += ["--seed", str(o.seed), "--dtype", o.dtype]
    if not o.quant_check:
        parts.append("--no-quant-check")
    else:
        parts += ["--calib-samples", str(o.calib)]
        if o.formats is not None:
            parts += ["--formats", ",".join(o.e2e_formats)]
    return " ".join(parts)


def corpus_arg(spec: str) -> str:
    """--corpus as a published command gives it: builtin and hf:// as they are, a local file by its name."""
    return spec if spec in ("builtin", "builtin-v1") or spec.startswith("hf://") else Path(spec).name


def resolve_source(o: AuditOptions, hub_factory: Callable[[], object]):
    """Where the checkpoint is on disk. What cannot be audited (an encoder model, code the user has
    not allowed, a config.json that is not JSON) is refused first: on the Hub, before any weights
    are downloaded."""
    from .loading import check_config, check_remote_code, dir_source, local_source, looks_local, parse_config

    if looks_local(o.model):
        if o.revision:
            from .errors import UsageError

            raise UsageError("--revision applies to Hub repos only; drop it for a local checkpoint")
        source = local_source(o.model)
        check_remote_code(source, o.trust_remote_code)
        return source
    hub = hub_factory()
    sha = hub.resolve_revision(o.model, o.revision)
    config = hub.read_text(o.model, "config.json", sha)
    if config is not None:
        check_config(parse_config(config, o.model), o.model, o.trust_remote_code)
    snap = hub.download_model(o.model, sha)
    return dir_source(o.model, snap.path, sha, snap.gguf_file, snap.weights)


def read_corpus(o: AuditOptions, hub_factory: Callable[[], Any]) -> tuple[str, list]:
    """(corpus name, documents) of `o.corpus`; a Hub dataset file is pinned to its commit."""
    from .corpus import check_count, load_documents

    def fetch(repo: str, path: str, revision: Optional[str]) -> tuple[Path, str]:
        sha = hub_factory().resolve_revision(repo, revision, repo_type="dataset")
        return hub_factory().download_dataset_file(repo, path, sha), sha

    name, docs = load_documents(o.corpus, fetch_dataset_file=fetch)
    if o.corpus != "builtin":
        check_count(docs, o.samples, name)
    return name, docs


def documents_of(o: AuditOptions, hub_factory: Callable[[], Any]) -> str:
    """The fingerprint of the corpus documents an audit with `o` reads (no model needed)."""
    from .corpus import documents_fingerprint, select

    _, docs = read_corpus(o, hub_factory)
    return documents_fingerprint(select(docs, o.samples, o.seed))


def expected_key(o: AuditOptions, hub_factory: Callable[[], Any], documents: Optional[str] = None) -> tuple[Optional[str], str]:
    """(commit sha, settings key) an audit of `o.model` with `o` would write, without loading the model:
    a Hub repo's weights fingerprint from its file metadata (no weight is downloaded), a local
    checkpoint's by hashing its weight files. `documents`: the corpus documents' fingerprint, when known."""
    from . import __version__
    from .card import key_of
    from .loading import looks_local

    if looks_local(o.model):
        from .loading import local_source
        from .weights import local_fingerprint

        source = local_source(o.model)
        sha, weights = None, local_fingerprint(source.path, source.gguf_file)
    else:
        hub = hub_factory()
        sha = hub.resolve_revision(o.model, o.revision)
        weights = hub.weights_fingerprint(o.model, sha, gguf_file=o.gguf_file)
    documents = documents or documents_of(o, hub_factory)
    return sha, key_of(weights, sha, documents, o.settings(), __version__.split(".")[0])


def _settings(o: AuditOptions) -> str:
    """What every process of a data-parallel run must share: the options, the token left out."""
    return repr({k: v for k, v in dataclasses.asdict(o).items() if k not in ("token", "progress", "command")})


def run_audit(o: AuditOptions, *, echo: Callable[[str], None] = lambda s: None, strict_baseline: bool = False) -> Report:
    """The audit. Under torchrun or accelerate launch every process runs it on its share of the
    batches and gets the merged report; only process 0 echoes and shows progress.

    With `o.baseline` the baseline report is read before the model (a baseline that cannot be read
    fails first); `strict_baseline` also refuses, before the model, options that differ from the
    baseline's (a regression check needs the same measurement)."""
    from .corpus import check_vocabulary, select, tokenize
    from .loading import load, local_name, text_config
    from .measure import distributed, kind_maxima, measure, peak_of, site_maxima
    from .progress import progress_bar
    from .sites import find_sites

    t0 = time.perf_counter()
    group = distributed.init(o.device)
    if not group.main:
        echo = lambda s: None  # noqa: E731
    group.agree("options", _settings(o))
    if o.device not in ("auto",):
        from .loading import pick_device

        pick_device(o.device)  # --device cuda where there is none: said now, not after the download
    device = distributed.local_device() if o.device == "auto" and group.world > 1 else o.device
    if group.world > 1 and o.device_map:
        from .errors import UsageError

        raise UsageError("--device-map shards one model over the devices of one process; drop it, or run a "
                         "single process (without torchrun) for a model that does not fit one GPU")
    from .hub import lazy_hub

    hub_factory = lazy_hub(o.token, progress=o.progress)

    # The corpus is read first: a bad corpus file fails before any model is downloaded or loaded.
    name, docs = read_corpus(o, hub_factory)
    base = _read_baseline(o, hub_factory, strict_baseline, echo) if o.baseline else None
    source = resolve_source(o, hub_factory)
    echo(f"loading {source.model_id}" + (f" @ {source.revision[:12]}" if source.revision else ""))
    if source.kind != "hub":
        local_id, why = local_name(o.model, o.model_name)
        echo(f"the report and the card name it {local_id} (from its {why}; --model-name names it otherwise)"
             if why != "--model-name" else f"the report and the card name it {local_id}")
    loaded = load(source, dtype=o.dtype, device=device or "auto", device_map=o.device_map,
                  trust_remote_code=o.trust_remote_code, progress=o.progress,
                  allow_missing_weights=o.allow_missing_weights)
    model, tok = loaded.model, loaded.tokenizer
    model_sites = find_sites(model)
    weights = source.weights
    if weights is None and source.kind != "hub" and group.main:
        from .weights import local_fingerprint

        weights = local_fingerprint(source.path, source.gguf_file)  # what the Hub will call these files
    t_load = time.perf_counter() - t0

    cfg = model.config
    text_cfg = text_config(cfg)
    seq_len = o.max_seq_len
    context = getattr(text_cfg, "max_position_embeddings", None)
    if isinstance(context, int) and 0 < context < seq_len:
        # Past the context it was trained on, a model's activations say nothing about its use.
        echo(f"--max-seq-len {seq_len} is longer than the model's context ({context} tokens); using {context}")
        seq_len = context
    corpus = tokenize(select(docs, o.samples, o.seed), tok, seq_len, name=name, seed=o.seed)
    check_vocabulary(corpus, model.get_input_embeddings().num_embeddings)
    group.agree("corpus or model", (corpus.record().fingerprint, source.revision, source.weights))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def decode(i: int) -> str:
        return tok.decode([i])

    batch_size = None if o.batch_size == "auto" else int(o.batch_size)
    calib = corpus.split_indices(o.calib)[0] if o.quant_check else None
    out = measure(model, model_sites, corpus.input_ids, pad_id, decode, batch_size=batch_size,
                  calib_indices=calib, percentiles=o.clip_percentiles, formats=o.e2e_formats if calib else (),
                  progress=lambda total, desc: progress_bar(total, desc, enabled=o.progress and group.main),
                  group=group, seed=o.seed, note=echo)
    distributed.finish(group)  # every collective is done: process 0 alone writes what follows

    record = ModelRecord(
        id=source.model_id if source.kind == "hub" else local_id,
        source=source.kind,
        revision=source.revision,
        architecture=(cfg.architectures or [type(model).__name__])[0],
        model_type=getattr(text_cfg, "model_type", cfg.model_type),
        num_layers=model_sites.num_layers,
        dtype=loaded.dtype,
        device=loaded.device,
        gguf_file=source.gguf_file,
        weights=weights,
    )
    peak = peak_of(out.sites)
    from .quant import dtype_verdict, fp16_safe, headroom

    site_max = site_maxima(out.sites)
    total = time.perf_counter() - t0
    report = Report(
        schema_version=SCHEMA_VERSION,
        tool_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        command=o.command or reproduce_command(o, source.revision, record.id),
        model=record,
        corpus=corpus.record(),
        peak=peak,
        kinds=kind_maxima(out.sites),
        fp16_safe=fp16_safe(site_max),
        headroom=headroom(peak.abs if peak else 0.0, site_max),
        sites=out.sites,
        timings=Timings(load_s=t_load, probe_s=out.probe_s, quant_s=out.quant_s, total_s=total,
                        tokens_per_s=out.tokens / (out.probe_s + out.quant_s) if out.tokens else 0.0),
        quant=out.quant,
        processes=out.processes,
        peak_interval=_peak_interval(out.sample_max, o.seed),
        dtype_verdicts=tuple(dtype_verdict(fmt, peak.abs if peak else 0.0, site_max,
                                           sum(s.nonfinite for s in out.sites)) for fmt in ("fp16", "bf16")),
        settings=o.settings(),
        experts=out.experts,
    )
    return _with_baseline(report, base)


def rebase(report: Report, o: AuditOptions, *, echo: Callable[[str], None] = lambda s: None,
           strict_baseline: bool = False) -> Report:
    """A saved report compared with `o.baseline` afresh (the baseline's card may have changed since),
    or without one when `o.baseline` is unset. No measurement."""
    from .hub import lazy_hub

    base = _read_baseline(o, lazy_hub(o.token, progress=o.progress), strict_baseline, echo) if o.baseline else None
    return _with_baseline(report, base)


def _with_baseline(report: Report, base: Any) -> Report:
    """`report` with its change against `base` (a sources.Loaded), or with none when `base` is None."""
    if base is None:
        return dataclasses.replace(report, baseline=None)
    from .comparison import baseline_change

    return dataclasses.replace(report, baseline=baseline_change(report, base.report, base.label))


def _read_baseline(o: AuditOptions, hub_factory: Callable[[], object], strict: bool, echo: Callable[[str], None]):
    """The --baseline report, read before the model; with `strict`, options that differ from its
    are refused here, not after the audit. None for `previous` on a card without a report yet."""
    from .comparison import settings_differences
    from .errors import UsageError
    from .loading import looks_local
    from .sources import baseline

    found = baseline(o.baseline, o.model, o.revision, looks_local(o.model), hub_factory)  # type: ignore[arg-type]
    if found is None:
        echo("--baseline previous: the model's card carries no activation range yet, so there is nothing to compare "
             "with (a first audit); the report will have no baseline")
        return None
    differ = settings_differences(o.settings(), found.report) if strict else ()
    if differ:
        raise UsageError(f"--baseline {found.label} was measured otherwise: {'; '.join(differ)}; a regression "
                         "check needs the same measurement: pass the baseline's values")
    return found


def _peak_interval(sample_max: Sequence[float], seed: int) -> Optional[tuple[float, float]]:
    from .quant.uncertainty import max_interval

    seen = [v for v in sample_max if v >= 0]
    return tuple(max_interval(seen, seed=seed)) if seen else None  # type: ignore[return-value]
