"""The `maxact-card` command line, end to end: help, errors, a real audit of a tiny model, `render`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

import maxact_card
from maxact_card.card import BEGIN_MARKER, END_MARKER, extract_metadata, fmt_num, render_readme
from maxact_card.cli import cli
from maxact_card.report import HEADLINE_KINDS, Report
from maxact_card.summary import fmt
from cli_helpers import assert_one_line_error, invoke
from models import save_tiny

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--samples", "8", "--max-seq-len", "32", "--no-quant-check", "--no-progress"]
TOKEN = "secret123"


# -- helpers ----------------------------------------------------------------------------------------

def run_module(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "maxact_card", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)



def files_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*")}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny llama checkpoint saved with save_pretrained (read-only for the tests that share it)."""
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny-llama")


@pytest.fixture(scope="module")
def good_audit(tiny_dir: Path, tmp_path_factory):
    """One successful audit of the tiny checkpoint: (result, output dir)."""
    out = tmp_path_factory.mktemp("good") / "out"
    result = invoke(["audit", str(tiny_dir), "-o", str(out), *SMALL])
    return result, out


# -- help -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["audit"], ["render"], ["install-hf-extension"]],
                         ids=["group", "audit", "render", "install-hf-extension"])
def test_help_has_examples(command: list[str]):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    assert re.search(r"^\s+maxact-card (audit|render|install-hf-extension)\b", result.output, re.M)
    if command:
        # every example of the command runs that command
        examples = result.output.split("Examples:", 1)[1]
        assert all(line.split()[1] == command[0] for line in examples.strip().splitlines())
    for name, sub in cli.commands.items():
        assert sub.help and sub.help.strip(), name
        for param in sub.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts}"


def _commands_and_options() -> tuple[list[str], list[str]]:
    commands = sorted(cli.commands)
    options = []
    for param in cli.commands["audit"].params:
        if isinstance(param, click.Option):
            options += [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
    return commands, options


def test_readme_documents_every_command_and_audit_option():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands, options = _commands_and_options()
    assert commands == ["audit", "compare", "install-hf-extension", "render", "sites"]
    missing = [f"maxact-card {c}" for c in commands if f"maxact-card {c}" not in text]
    missing += [o for o in options if not re.search(re.escape(o) + r"(?![\w-])", text)]
    assert not missing, f"README.md does not mention: {missing}"


def test_help_is_fast_and_imports_no_torch():
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        proc = run_module("--help")
        best = min(best, time.perf_counter() - t0)
        assert proc.returncode == 0 and "audit" in proc.stdout and "render" in proc.stdout
    assert best < 1.0, f"`maxact-card --help` took {best:.2f}s"
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from maxact_card.cli import cli\n"
        "for args in (['--help'], ['audit', '--help'], ['render', '--help'], ['compare', '--help'], ['--version']):\n"
        "    assert CliRunner().invoke(cli, args).exit_code == 0, args\n"
        "print(sorted(m for m in ('torch', 'transformers', 'matplotlib', 'gguf') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_version_and_console_scripts():
    proc = run_module("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"maxact-card, version {maxact_card.__version__}"
    bindir = Path(sys.executable).parent
    for script, prog in (("maxact-card", "maxact-card"), ("hf-maxact", "hf maxact")):
        path = bindir / script
        assert path.is_file() and os.access(path, os.X_OK), path
        for args in (["--help"], ["audit", "--help"]):
            proc = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.startswith(f"Usage: {prog} ")
            examples = proc.stdout.split("Examples:", 1)[1]
            assert f"  {prog} audit " in examples and ("maxact-card audit" in examples) == (prog == "maxact-card")


def test_hf_cli_runs_maxact_as_an_extension(tmp_path: Path):
    """After `maxact-card install-hf-extension`, the real `hf` CLI lists `maxact` and runs hf-maxact."""
    env = {**os.environ, "HOME": str(tmp_path), "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    bindir = Path(sys.executable).parent
    proc = subprocess.run([str(bindir / "maxact-card"), "install-hf-extension"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / ".local/share/hf/extensions/hf-maxact"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["executable_path"] == str(folder / "launcher.sh")  # it runs this installation's hf-maxact
    assert str((bindir / "hf-maxact").resolve()) in (folder / "launcher.sh").read_text()
    listed = subprocess.run([str(bindir / "hf"), "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert re.search(r"^\s+maxact\s", listed.stdout, re.M), listed.stdout
    proc = subprocess.run([str(bindir / "hf"), "maxact", "--version"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"maxact-card, version {maxact_card.__version__}"
    proc = subprocess.run([str(bindir / "hf"), "maxact", "audit", str(tmp_path / "missing")], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("Error: no such file or directory"), proc.stderr
    proc = subprocess.run([str(bindir / "hf"), "maxact", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.startswith("Usage: hf maxact [OPTIONS] COMMAND") and "  hf maxact audit " in proc.stdout


def test_a_stale_hf_extension_says_how_to_reinstall(tmp_path: Path, monkeypatch):
    """The environment maxact-card was installed in is gone: `hf maxact` says how to reinstall
    instead of `hf`'s "No such command"."""
    from maxact_card import hf_extension

    monkeypatch.setenv("HOME", str(tmp_path))
    gone = tmp_path / "old-venv" / "bin" / "hf-maxact"
    gone.parent.mkdir(parents=True)
    gone.write_text("#!/bin/sh\necho ran\n", encoding="utf-8")
    gone.chmod(0o755)
    hf_extension.install(gone)
    env = {**os.environ, "HOME": str(tmp_path), "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    hf = str(Path(sys.executable).parent / "hf")
    proc = subprocess.run([hf, "maxact", "audit", "x"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "ran\n", proc.stderr
    shutil.rmtree(tmp_path / "old-venv")
    proc = subprocess.run([hf, "maxact", "audit", "x"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"Error: hf maxact: {gone} is gone") and "pip install maxact-card" in proc.stderr
    assert "maxact-card install-hf-extension" in proc.stderr


def test_python_dash_m_usage_names_the_program():
    proc = run_module("--help")
    assert proc.returncode == 0
    assert "__main__" not in proc.stdout
    assert proc.stdout.startswith("Usage: python -m maxact_card [OPTIONS] COMMAND")


# -- errors -----------------------------------------------------------------------------------------
def _no_weights(tmp: Path, tiny: Path) -> str:
    d = tmp / "no-weights"
    d.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, d / name)
    return str(d)


def _no_config(tmp: Path, tiny: Path) -> str:
    d = tmp / "no-config"
    d.mkdir()
    shutil.copy(tiny / "model.safetensors", d / "model.safetensors")
    return str(d)


def _corrupt_weights(tmp: Path, tiny: Path) -> str:
    d = tmp / "corrupt-weights"
    shutil.copytree(tiny, d)
    data = (tiny / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])  # an interrupted download
    return str(d)


def _txt_model(tmp: Path, tiny: Path) -> str:
    p = tmp / "model.txt"
    p.write_text("not a model\n")
    return str(p)


def _corpus(name: str, content: str):
    def make(tmp: Path) -> str:
        p = tmp / name
        p.write_text(content, encoding="utf-8")
        return str(p)

    return make


def _config_not_json(tmp: Path, tiny: Path) -> str:
    d = tmp / "bad-config"
    shutil.copytree(tiny, d)
    (d / "config.json").write_text('{"model_type": "llama", oops', encoding="utf-8")
    return str(d)


def _other_family(model_type: str, **fields):
    """A checkpoint directory of an encoder or encoder-decoder family (its weights are never read)."""
    def make(tmp: Path, tiny: Path) -> str:
        d = tmp / model_type
        shutil.copytree(tiny, d)
        (d / "config.json").write_text(json.dumps({"model_type": model_type, **fields}), encoding="utf-8")
        return str(d)

    return make


def _missing_tensor(tmp: Path, tiny: Path) -> str:
    from safetensors.torch import load_file, save_file

    d = tmp / "missing-tensor"
    shutil.copytree(tiny, d)
    weights = load_file(d / "model.safetensors")
    del weights["model.layers.1.mlp.down_proj.weight"]
    save_file(weights, d / "model.safetensors", metadata={"format": "pt"})
    return str(d)


BAD_JSONL = '{"text": "w4 w5 w6"}\n{"text": "w7 w8"}\n{"text": oops}\n{"text": "w9"}\n'

# id -> (model(tmp, tiny) or None for the tiny checkpoint, extra args(tmp), substrings of the message)
ERROR_CASES = {
    "missing-path": (lambda tmp, tiny: str(tmp / "nope"), lambda tmp: [], ["no such file or directory", "nope"]),
    "dir-without-config": (_no_config, lambda tmp: [], ["no config.json"]),
    "config-without-weights": (_no_weights, lambda tmp: [], ["no weight files"]),
    "corrupt-weights": (_corrupt_weights, lambda tmp: [], ["corrupt-weights"]),
    "txt-file": (_txt_model, lambda tmp: [], ["model.txt", "not a .gguf"]),
    "samples-0": (None, lambda tmp: ["--samples", "0"], ["--samples must be a positive integer, got 0"]),
    "samples-neg": (None, lambda tmp: ["--samples", "-3"], ["--samples must be a positive integer, got -3"]),
    "max-seq-len-0": (None, lambda tmp: ["--max-seq-len", "0"], ["--max-seq-len must be a positive integer, got 0"]),
    "batch-size-0": (None, lambda tmp: ["--batch-size", "0"], ["--batch-size", "'0'"]),
    "calib-samples-neg": (None, lambda tmp: ["--calib-samples", "-1"], ["--calib-samples must be >= 0, got -1"]),
    "corpus-bad-json": (None, lambda tmp: ["--corpus", _corpus("bad.jsonl", BAD_JSONL)(tmp)],
                        ["bad.jsonl line 3", "not valid JSON"]),
    "corpus-empty": (None, lambda tmp: ["--corpus", _corpus("empty.jsonl", "")(tmp)], ["empty.jsonl", "empty"]),
    "corpus-extension": (None, lambda tmp: ["--corpus", _corpus("texts.csv", "a,b\n")(tmp)],
                         ["unsupported corpus", "texts.csv"]),
    "corpus-missing": (None, lambda tmp: ["--corpus", str(tmp / "absent.jsonl")], ["corpus file not found"]),
    "output-under-a-file": (None, lambda tmp: ["-o", _corpus("a-file", "x")(tmp) + "/sub"],
                            ["cannot write to", "--output-dir"]),
    "dry-run-alone": (None, lambda tmp: ["--dry-run"], ["--open-pr"]),
    "force-alone": (None, lambda tmp: ["--force"], ["--open-pr"]),
    "write-card-file": (_txt_model, lambda tmp: ["--write-card"], ["--write-card needs a local checkpoint directory"]),
    "write-card-hub-id": (lambda tmp, tiny: "org/some-model", lambda tmp: ["--write-card"],
                          ["--write-card needs a local checkpoint directory"]),
    "revision-on-local": (None, lambda tmp: ["--revision", "main"], ["--revision applies to Hub repos only"]),
    "clip-percentile": (None, lambda tmp: ["--clip-percentiles", "99.9,100"], ["--clip-percentiles"]),
    "device-unknown": (None, lambda tmp: ["--device", "tpu"], ["--device must be auto, cpu, cuda, cuda:N or mps"]),
    "calib-samples-0": (None, lambda tmp: ["--quant-check", "--calib-samples", "0"],
                        ["--calib-samples 0 leaves nothing to calibrate", "--no-quant-check"]),
    "calib-samples-all": (None, lambda tmp: ["--quant-check", "--calib-samples", "8"],
                          ["--calib-samples 8 leaves no samples to evaluate on with --samples 8"]),
    "calib-samples-word": (None, lambda tmp: ["--quant-check", "--calib-samples", "half"],
                           ["--calib-samples", "give 'auto' or a whole number of samples, not 'half'"]),
    "formats-unknown": (None, lambda tmp: ["--quant-check", "--formats", "int8_per_token,fp5"],
                        ["--formats: unknown quantization format 'fp5'; valid formats: int8_absmax,", "nvfp4"]),
    "formats-unconfigured-percentile": (None, lambda tmp: ["--quant-check", "--formats", "int8_p99.5"],
                                        ["unknown quantization format 'int8_p99.5'"]),
    "formats-without-check": (None, lambda tmp: ["--formats", "nvfp4"], ["drop --no-quant-check"]),
    "samples-1-with-check": (None, lambda tmp: ["--quant-check", "--samples", "1"], ["needs at least 2 samples"]),
    "clip-empty": (None, lambda tmp: ["--clip-percentiles", ""], ["--clip-percentiles needs at least one"]),
    "clip-twice": (None, lambda tmp: ["--clip-percentiles", "99.9,99.90"], ["lists a percentile twice"]),
    "config-not-json": (_config_not_json, lambda tmp: [], ["config.json of", "is not valid JSON (line 1"]),
    "encoder-model": (_other_family("bert", architectures=["BertModel"]), lambda tmp: [],
                      ["is an encoder model (bert)", "out of its scope"]),
    "encoder-decoder-model": (_other_family("t5", is_encoder_decoder=True), lambda tmp: [],
                              ["is an encoder-decoder model (t5)", "out of its scope"]),
    "missing-tensor": (_missing_tensor, lambda tmp: [],
                       ["lacks 1 tensor(s) the model needs (model.layers.1.mlp.down_proj.weight)",
                        "--allow-missing-weights"]),
    "corpus-surrogate": (None, lambda tmp: ["--corpus", _corpus("sur.jsonl", '{"text": "w4 \\ud800 w5"}\n' * 9)(tmp)],
                         ["sur.jsonl line 1", "unpaired surrogate (\\ud800)"]),
    "corpus-id-beyond-vocabulary": (None, lambda tmp: ["--corpus", _corpus("ids.jsonl", '{"input_ids": [1, 500]}\n' * 9)(tmp)],
                                    ["token id 500, outside the model's vocabulary of 128 ids"]),
    "corpus-txt-one-document": (None, lambda tmp: ["--corpus", _corpus("one.txt", "w4 w5\nw6 w7\nw8\n")(tmp)],
                                ["holds 1 document(s), fewer than --samples 8", "blank line separates documents"]),
    # Linux has no MPS device; an unavailable device is refused before anything is loaded onto it.
    "device-mps-absent": (None, lambda tmp: ["--device", "mps"], ["--device mps: no MPS device is available"]),
}
if not torch.cuda.is_available():
    ERROR_CASES["device-cuda-absent"] = (None, lambda tmp: ["--device", "cuda:1"],
                                         ["--device cuda:1: no CUDA device is available here; use --device cpu"])
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_one_line_errors_and_no_partial_output(case: str, tiny_dir: Path, tmp_path: Path, monkeypatch):
    make_model, make_args, needles = ERROR_CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    model = make_model(tmp_path, tiny_dir) if make_model else str(tiny_dir)
    extra = make_args(tmp_path)
    out = tmp_path / "out"
    args = ["audit", model, *SMALL, *extra]
    if "-o" not in extra:
        args += ["-o", str(out)]
    before = files_under(tmp_path)
    result = invoke(args)
    assert_one_line_error(result, *needles)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert not out.exists()
    assert files_under(tmp_path) == before  # nothing written anywhere, not even a temp file
    assert files_under(work) == set()


def test_interrupt_is_one_line_with_exit_code_130(tiny_dir: Path, tmp_path: Path, monkeypatch):
    import maxact_card.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(maxact_card.pipeline, "run_audit", interrupted)
    result = invoke(["audit", str(tiny_dir), *SMALL, "-o", str(tmp_path / "out")])
    assert_one_line_error(result, "interrupted; nothing was written")
    assert result.exit_code == 130
    assert not (tmp_path / "out").exists()


def test_unwritable_output_dir(tiny_dir: Path, tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running with rights that ignore directory permissions (root)")
        result = invoke(["audit", str(tiny_dir), *SMALL, "-o", str(locked / "out")])
        assert_one_line_error(result, "cannot write to", str(locked))
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_output_dir_that_cannot_exist(tiny_dir: Path, tmp_path: Path):
    """A path under a regular file can be created by nobody, root included."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = invoke(["audit", str(tiny_dir), *SMALL, "-o", str(blocker / "out")])
    assert_one_line_error(result, "cannot write to", str(blocker))
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_remote_code_is_refused_without_the_flag(tiny_dir: Path, tmp_path: Path):
    ckpt = tmp_path / "custom"
    shutil.copytree(tiny_dir, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["model_type"] = "acme_secret_arch"
    config["auto_map"] = {"AutoConfig": "configuration_acme.AcmeConfig",
                          "AutoModelForCausalLM": "modeling_acme.AcmeForCausalLM"}
    (ckpt / "config.json").write_text(json.dumps(config))
    # Code that must never run: it would leave a file behind.
    marker = tmp_path / "code-ran"
    for mod in ("configuration_acme.py", "modeling_acme.py"):
        (ckpt / mod).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    result = invoke(["audit", str(ckpt), *SMALL, "-o", str(tmp_path / "out")])
    assert_one_line_error(result, "--trust-remote-code", "auto_map")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_exit_codes_and_debug_traceback_in_a_real_process(tmp_path: Path):
    missing = str(tmp_path / "nope")
    proc = run_module("audit", missing, *SMALL, env={"MAXACT_DEBUG": "0"})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == (f"Error: no such file or directory: {missing}; pass a local checkpoint "
                                   "directory, a .gguf file or a Hub repo id")
    proc = run_module("audit", missing, *SMALL, env={"MAXACT_DEBUG": "1"})
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ModelNotFoundError" in proc.stderr
    proc = run_module("render", str(tmp_path / "absent.json"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: no report at")


def test_fail_above_exit_code_in_a_real_process(tiny_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    proc = run_module("audit", str(tiny_dir), *SMALL, "-o", str(out), "--fail-above", "1e-9")
    assert proc.returncode == 3, proc.stderr
    report = Report.load(out / "maxact_report.json")
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"Error: M = {report.peak.abs:.6g} at {report.peak.site} exceeds --fail-above 1e-09"
    # The report records the options that decide the measurement (not output, gate or display flags).
    assert report.command == f"maxact-card audit {tiny_dir.name} {' '.join(SMALL[:-1])}"


@pytest.mark.parametrize("args, needle", [
    (["render", "{tmp}/absent.json"], "no report at"),
    (["render", "{tmp}/notjson.json"], "report is not valid JSON"),
    (["render", "{tmp}/noschema.json"], "no schema_version"),
    (["render", "{tmp}/old.json"], "schema 0.3 is not readable"),
    (["render", "{tmp}/good.json", "--readme", "{tmp}/absent.md"], "no README at"),
])
def test_render_errors(args: list[str], needle: str, tmp_path: Path, good_audit):
    (tmp_path / "notjson.json").write_text("this is not JSON\n")
    (tmp_path / "noschema.json").write_text(json.dumps({"model": {"id": "x"}}))
    (tmp_path / "old.json").write_text(json.dumps({"schema_version": "0.3"}))
    shutil.copy(good_audit[1] / "maxact_report.json", tmp_path / "good.json")
    before = files_under(tmp_path)
    result = invoke([a.format(tmp=tmp_path) for a in args] + ["-o", str(tmp_path / "card.md")])
    assert_one_line_error(result, needle)
    assert result.exit_code == 2
    assert files_under(tmp_path) == before


# -- a good audit -----------------------------------------------------------------------------------
def test_good_audit_writes_a_loadable_report_and_prints_the_summary(good_audit, tiny_dir: Path):
    result, out = good_audit
    assert result.exit_code == 0, result.output
    path = out / "maxact_report.json"
    assert files_under(out) == {"maxact_report.json"}
    report = Report.load(path)
    assert path.read_text(encoding="utf-8") == report.to_json()
    assert Report.from_json(report.to_json()) == report

    m = report.model
    assert (m.id, m.source, m.revision, m.gguf_file) == (tiny_dir.name, "dir", None, None)
    assert (m.architecture, m.model_type, m.num_layers, m.dtype, m.device) == (
        "LlamaForCausalLM", "llama", 2, "float32", "cpu")
    c = report.corpus
    assert (c.name, c.samples, c.max_seq_len, c.seed) == ("builtin-v1", 8, 32, 0)
    assert 8 < c.tokens <= 8 * 32 and sum(c.domains.values()) == 8
    assert report.quant is None  # --no-quant-check

    # M is the largest |a| over the headline sites, and every site of the 2-layer model was probed.
    peak = report.peak
    headline = [s for s in report.sites if s.kind in HEADLINE_KINDS]
    assert peak.abs == max(s.absmax for s in headline) and peak.abs == abs(peak.value) > 0
    assert report.site(peak.site).absmax == peak.abs
    names = {s.name for s in report.sites}
    assert {"embed", "final_norm"} | {f"layers.{i}.{k}" for i in (0, 1) for k in ("attn", "mlp", "residual")} <= names
    # Every non-padding token counts once per channel (hidden size 32) at the residual-stream sites.
    assert {s.count for s in report.sites if s.kind in HEADLINE_KINDS} == {c.tokens * 32}
    assert report.fp16_safe is True

    # The summary names M and its site; the last line says where the report is.
    lines = result.stdout.splitlines()
    m_line = next(line for line in lines if line.startswith("M = "))
    assert m_line.startswith(f"M = {fmt(peak.abs)}  (signed {peak.value:.6g}) at {peak.site}: ")
    assert f"sample {peak.sample}, position {peak.position}" in m_line
    assert lines[-1] == f"report: {path}"
    assert "fp16: ok, 2.56e+04x headroom" in lines and "  95% CI 2.6 to 2.6 over the samples (bootstrap)" in lines
    assert "Traceback" not in result.output


def test_default_output_dir_is_named_after_the_model(tiny_dir: Path, tmp_path: Path, monkeypatch):
    shutil.copytree(tiny_dir, tmp_path / "my.model v2")
    monkeypatch.chdir(tmp_path)
    result = invoke(["audit", "my.model v2/", *SMALL])
    assert result.exit_code == 0, result.output
    expected = Path("maxact-my.model-v2") / "maxact_report.json"
    assert result.stdout.splitlines()[-1] == f"report: {expected}"
    assert Report.load(tmp_path / expected).model.id == "my.model v2"  # named by its folder, not its path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maxact-my.model-v2", "my.model v2"]


def test_device_map_auto_gives_the_same_report_and_names_the_devices(tiny_dir: Path, tmp_path: Path):
    """accelerate's placement (here all on the CPU) changes where the model runs, not what it measures."""
    args = ["--samples", "8", "--max-seq-len", "32", "--calib-samples", "4", "--no-progress"]
    plain = invoke(["audit", str(tiny_dir), "-o", str(tmp_path / "plain"), *args])
    mapped = invoke(["audit", str(tiny_dir), "-o", str(tmp_path / "mapped"), "--device-map", "auto", *args])
    assert plain.exit_code == 0 and mapped.exit_code == 0, mapped.output
    a, b = (Report.load(tmp_path / d / "maxact_report.json") for d in ("plain", "mapped"))
    assert b.model.device == "cpu" and a.model.device == "cpu"
    assert a.sites == b.sites and a.peak == b.peak and a.quant.end_to_end == b.quant.end_to_end


def test_max_seq_len_is_capped_at_the_model_context(tiny_dir: Path, tmp_path: Path):
    """The tiny model's context is 256 tokens: a longer --max-seq-len is lowered to it, and said so."""
    out = tmp_path / "out"
    result = invoke(["audit", str(tiny_dir), "-o", str(out), "--samples", "4", "--max-seq-len", "300",
                     "--no-quant-check", "--no-progress", "--corpus", _long_corpus(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "--max-seq-len 300 is longer than the model's context (256 tokens); using 256" in result.stderr
    report = Report.load(out / "maxact_report.json")
    assert report.corpus.max_seq_len == 256 and report.corpus.tokens == 4 * 256


def _long_corpus(tmp: Path) -> str:
    path = tmp / "long.jsonl"
    path.write_text("".join(json.dumps({"input_ids": [1] + [4 + (i * 7 + j) % 120 for j in range(400)]}) + "\n"
                            for i in range(4)), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("threshold, code", [("1e-9", 3), ("1e9", 0)])
def test_fail_above(threshold: str, code: int, tiny_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = invoke(["audit", str(tiny_dir), *SMALL, "-o", str(out), "--fail-above", threshold])
    assert result.exit_code == code, result.output
    report = Report.load(out / "maxact_report.json")  # written in both cases
    assert f"report: {out / 'maxact_report.json'}" in result.stdout
    if code == 3:
        assert_one_line_error(result, f"M = {report.peak.abs:.6g}", f"at {report.peak.site}", "--fail-above 1e-09")
    else:
        assert "Error" not in result.stderr


@pytest.mark.parametrize("form", [["--token", TOKEN], [f"--token={TOKEN}"]], ids=["separate", "equals"])
def test_token_is_never_written_or_printed(form: list[str], tiny_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = invoke(["audit", str(tiny_dir), *form, *SMALL, "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = Report.load(out / "maxact_report.json")
    assert report.command == f"maxact-card audit {tiny_dir.name} {' '.join(SMALL[:-1])}"
    assert "--token" not in report.command
    assert TOKEN not in result.output
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p


def test_command_comes_from_the_parsed_arguments_not_sys_argv(tiny_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["host-program", "serve", "--port", "8080"])
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["audit", str(tiny_dir), *SMALL, "-o", str(out)])
    assert result.exit_code == 0, result.output
    command = Report.load(out / "maxact_report.json").command
    assert command.startswith(f"maxact-card audit {tiny_dir.name} ")
    assert "--samples 8" in command and "8080" not in command


# -- render -----------------------------------------------------------------------------------------
AUTHOR_README = (
    "---\n"
    "license: apache-2.0\n"
    "# a comment the author wrote\n"
    "base_model: null\n"
    "tags:\n"
    "- tiny   # trailing comment\n"
    "---\n"
    "\n"
    "# Tiny llama\n"
    "\n"
    "Some text by the author,   with  odd   spacing and a trailing space \n"
    "| a | b |\n"
    "|---|---|\n"
)


def test_render_merges_into_readme_keeping_author_bytes_and_is_idempotent(good_audit, tmp_path: Path,
                                                                           monkeypatch):
    report_path = good_audit[1] / "maxact_report.json"
    report = Report.load(report_path)
    monkeypatch.chdir(tmp_path)
    Path("README.md").write_bytes(AUTHOR_README.encode())
    shutil.copy(report_path, "maxact_report.json")

    args = ["render", "maxact_report.json", "--readme", "README.md", "-o", "README.md"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    first = Path("README.md").read_bytes()
    text = first.decode()
    assert text == render_readme(report, AUTHOR_README)

    # The author's front matter lines come first, unchanged; our block goes before the closing '---'.
    fm_end = AUTHOR_README.index("---\n", 4)
    assert text.startswith(AUTHOR_README[:fm_end] + "activation_range:\n")
    meta = extract_metadata(text)
    # A local checkpoint is named by its weights' fingerprint, the one the Hub will give the same files.
    assert report.model.weights.startswith("sha256:")
    assert meta is not None and meta["settings_key"].startswith(f"weights={report.model.weights};")
    # The body is kept byte for byte, then one blank line and the section.
    body = AUTHOR_README[fm_end + 4:]
    assert body in text
    section = text[text.index(BEGIN_MARKER):]
    assert text.endswith(END_MARKER + "\n")
    assert text.index(body) + len(body) + 1 == text.index(BEGIN_MARKER)
    assert f"**M = max |a| = {fmt_num(report.peak.abs)}**" in section
    assert f"`{report.peak.site}`" in section

    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert Path("README.md").read_bytes() == first
    assert sorted(os.listdir(".")) == ["README.md", "maxact_report.json"]


def test_render_to_stdout_without_readme(good_audit):
    report_path = good_audit[1] / "maxact_report.json"
    result = invoke(["render", str(report_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == render_readme(Report.load(report_path), None)
    assert result.stdout.startswith("---\nactivation_range:\n")


def test_help_names_the_default_formats_as_production_has_them():
    from maxact_card.quant import e2e_formats

    out = "".join(invoke(["audit", "--help"]).output.split())  # help text is wrapped, even inside the list
    assert f"[default:{','.join(e2e_formats())}]" in out
