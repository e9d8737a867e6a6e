"""Model and tokenizer from a local directory, a Hub snapshot or a .gguf file."""

from __future__ import annotations

import contextlib
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from .errors import (
    ModelLoadError,
    ModelNotFoundError,
    NoWeightsError,
    RemoteCodeError,
    UnsupportedArchitectureError,
    UsageError,
    first_line,
)

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "*.pth")


@dataclass(frozen=True)
class Source:
    """Where the checkpoint lives on disk once resolved."""

    model_id: str
    kind: str  # 'hub', 'dir' or 'gguf'
    path: Path  # the directory holding config/tokenizer/weights
    gguf_file: Optional[str]
    revision: Optional[str]
    weights: Optional[str] = None  # fingerprint of the weight files (Hub snapshots), see hub.ModelSnapshot


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    source: Source
    dtype: str
    device: str


def looks_local(spec: str) -> bool:
    return spec.endswith(".gguf") or spec.startswith((".", "/", "~")) or Path(spec).exists()


_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # a Hub id: name or owner/name


def looks_like_path(name: str) -> bool:
    """A local path (absolute, relative, home, Windows drive), not a model name such as org/model."""
    return name.startswith(("/", ".", "~", "\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", name)) or "\\" in name


def local_name(spec: str, model_name: Optional[str]) -> tuple[str, str]:
    """(name, where it came from) of a local checkpoint, as the report, the card and the command name
    it: `--model-name`, else its config.json's `_name_or_path` when that is a name (transformers 4
    wrote it; often the id the weights were loaded from), else the folder's or the file's name.
    Never the path: a card must not publish the machine's folders."""
    if model_name:
        return model_name, "--model-name"
    path = Path(spec).expanduser()
    if path.is_dir():
        try:
            recorded = json.loads((path / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if isinstance(recorded, str) and _NAME.match(recorded) and not looks_like_path(recorded):
            return recorded, "config.json _name_or_path"
        return path.resolve().name, "folder name"
    return path.name, "file name"


def local_path(spec: str) -> Path:
    """A local checkpoint's path: a directory or a .gguf file that exists."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"no such file or directory: {spec}; pass a local checkpoint directory, a .gguf file or a Hub repo id")
    if path.is_file() and path.suffix != ".gguf":
        raise ModelNotFoundError(f"{spec} is a file but not a .gguf; pass a checkpoint directory, a .gguf file or a Hub repo id")
    return path


def local_source(spec: str) -> Source:
    path = local_path(spec)
    if path.is_file():
        return Source(spec, "gguf", path.parent.resolve(), path.name, None)
    return dir_source(spec, path, None)


def dir_source(model_id: str, path: Path, revision: Optional[str], gguf_file: Optional[str] = None,
               weights: Optional[str] = None) -> Source:
    if gguf_file:
        return Source(model_id, "gguf", path, gguf_file, revision, weights)
    if not (path / "config.json").is_file():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return Source(model_id, "gguf", path, ggufs[0], revision, weights)
        raise ModelNotFoundError(f"{model_id} has no config.json; pass a transformers checkpoint directory or a .gguf file")
    if not any(next(path.glob(p), None) is not None for p in WEIGHT_PATTERNS):
        raise NoWeightsError(f"{model_id} has a config.json but no weight files (*.safetensors, *.bin); save the weights next to it")
    return Source(model_id, "hub" if revision else "dir", path, None, revision, weights)


# Encoder models (some of which transformers also builds with a causal-LM head): out of scope.
ENCODER_TYPES = frozenset({
    "albert", "bert", "bert-generation", "big_bird", "camembert", "data2vec-text", "deberta", "deberta-v2",
    "distilbert", "electra", "ernie", "megatron-bert", "modernbert", "mpnet", "nezha", "qdqbert", "rembert",
    "roberta", "roberta-prelayernorm", "roc_bert", "xlm", "xlm-roberta", "xlm-roberta-xl", "xmod",
    "reformer", "roformer", "xlnet", "prophetnet", "xlm-prophetnet", "trocr",
})


def parse_config(text: str, model_id: str) -> dict[str, Any]:
    """config.json as a dict; a file that is not a JSON object is one line, not a traceback."""
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"config.json of {model_id} is not valid JSON (line {exc.lineno}: {exc.msg}); "
                             "re-download the checkpoint or fix the file") from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"config.json of {model_id} is not a JSON object; re-download the checkpoint")
    return cfg


def check_config(cfg: dict[str, Any], model_id: str, trust_remote_code: bool) -> None:
    """Refuse, before any download of weights or import of model code, what cannot be audited: an
    encoder or encoder-decoder model, a draft model that runs on its target's states, or an
    architecture that lives in the repo's own code."""
    kind = cfg.get("model_type")
    if cfg.get("is_encoder_decoder") or kind in ENCODER_TYPES:
        what = "an encoder-decoder" if cfg.get("is_encoder_decoder") else "an encoder"
        raise UnsupportedArchitectureError(
            f"{model_id} is {what} model ({kind or 'unknown type'}); maxact-card measures decoder-only "
            "language models (and the text decoder of vision-language models): encoder and encoder-decoder "
            "models are out of its scope")
    if isinstance(kind, str) and kind.endswith("_assistant"):
        raise UnsupportedArchitectureError(
            f"{model_id} is a draft model for speculative decoding ({kind}): it runs on the states of its "
            "target model, not on text alone; audit the target model")
    if trust_remote_code:
        return
    from transformers import CONFIG_MAPPING

    if "auto_map" in cfg and kind not in CONFIG_MAPPING:
        raise RemoteCodeError(
            f"{model_id} needs code from its repo to load (config.json auto_map); "
            "review that code, then pass --trust-remote-code"
        )


def check_remote_code(source: Source, trust_remote_code: bool) -> None:
    """check_config on a local checkpoint's config.json (GGUF files carry no config.json)."""
    if source.gguf_file:
        return
    try:
        text = (source.path / "config.json").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read config.json of {source.model_id} ({exc}); re-download the checkpoint") \
            from None
    check_config(parse_config(text, source.model_id), source.model_id, trust_remote_code)


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    if device == "cpu" or device == "mps" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device is available here; use --device cpu")
        if device == "mps" and not _mps_available():
            raise UsageError("--device mps: no MPS device is available here (Apple silicon only); use --device cpu")
        return device
    raise UsageError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")


def _mps_available() -> bool:
    import torch

    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def load(source: Source, *, dtype: str, device: str, device_map: Optional[str], trust_remote_code: bool,
         progress: bool = True, allow_missing_weights: bool = False) -> Loaded:
    from transformers.utils import logging as hf_logging

    check_remote_code(source, trust_remote_code)
    dev = pick_device(device)
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if source.gguf_file:
        kw["gguf_file"] = source.gguf_file
    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    with _quiet_gguf_bar() if not progress and source.gguf_file else contextlib.nullcontext():
        model, tokenizer, torch_dtype, info = _from_pretrained(source, dtype, device_map, kw)
    if not allow_missing_weights:
        check_weights(source.model_id, info)
    if not device_map:
        model.to(dev)
    model.eval()
    return Loaded(model, tokenizer, source, str(torch_dtype).replace("torch.", ""),
                  placed_on(model) if device_map else str(dev))


def placed_on(model: Any) -> str:
    """Where accelerate put a sharded model: its parameters' devices in order ('cuda:0,cuda:1', 'cpu')."""
    placed: list[str] = []
    for p in model.parameters():
        name = str(p.device)
        if name not in placed:
            placed.append(name)
    return ",".join(placed)


@contextlib.contextmanager
def _quiet_gguf_bar() -> Iterator[None]:
    """transformers draws its GGUF de-quantization bar with plain tqdm, which its progress-bar
    switch does not reach: silence that one bar while loading."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def _from_pretrained(source: Source, dtype: str, device_map: Optional[str], kw: dict[str, Any]):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = str(source.path)
    try:
        config = AutoConfig.from_pretrained(path, **kw)
        torch_dtype = resolve_dtype(dtype, config, bool(source.gguf_file))
        # The config is parsed once (a GGUF file's metadata takes seconds to read): both reuse it.
        tokenizer = AutoTokenizer.from_pretrained(path, config=config, **kw)
        mkw = dict(kw, dtype=torch_dtype, config=config, output_loading_info=True)
        if device_map:
            mkw["device_map"] = device_map
        try:
            model, info = AutoModelForCausalLM.from_pretrained(path, **mkw)
        except ValueError:
            from transformers import AutoModelForImageTextToText

            model, info = AutoModelForImageTextToText.from_pretrained(path, **mkw)
    except Exception as exc:  # transformers, safetensors and gguf raise many types for a bad checkpoint
        first = first_line(exc)
        raise ModelLoadError(
            f"cannot load {source.model_id}: {first}; check that the checkpoint is complete and a "
            "transformers model (re-download it, or update transformers)"
        ) from exc
    return model, tokenizer, torch_dtype, info


def check_weights(model_id: str, info: dict[str, Any]) -> None:
    """A tensor the model needs but the checkpoint lacks would be random; one it holds but the model
    does not read means another architecture: either way the card would not describe this checkpoint."""
    missing = sorted(info.get("missing_keys") or ()) + sorted(str(k[0]) if isinstance(k, tuple) else str(k)
                                                            for k in info.get("mismatched_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    if not (missing or unexpected):
        return
    parts = []
    if missing:
        parts.append(f"lacks {len(missing)} tensor(s) the model needs ({_names(missing)}), which would be random")
    if unexpected:
        parts.append(f"holds {len(unexpected)} tensor(s) the model does not read ({_names(unexpected)})")
    raise ModelLoadError(f"{model_id} {' and '.join(parts)}; fix the checkpoint, or pass --allow-missing-weights "
                         "to audit it anyway")


def _names(keys: list[str], shown: int = 3) -> str:
    return ", ".join(keys[:shown]) + (f", and {len(keys) - shown} more" if len(keys) > shown else "")


def text_config(config: Any) -> Any:
    """The language model's part of a config (a vision-language model's text_config), else the config."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def resolve_dtype(dtype: str, config: Any, gguf: bool):
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if gguf:
        return torch.float32  # GGUF tensors are de-quantized to float32
    text = text_config(config)
    found = getattr(text, "dtype", None) or getattr(config, "dtype", None)
    if isinstance(found, str):
        found = getattr(torch, found, None)
    return found if isinstance(found, torch.dtype) else torch.float32
