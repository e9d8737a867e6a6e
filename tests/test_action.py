"""The composite GitHub Action: its interface, and its shell steps run locally with bash."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import yaml

from factories import make_report

ROOT = Path(__file__).resolve().parent.parent
ACTION_DIR = ROOT / "github_action"
ACTION = yaml.safe_load((ACTION_DIR / "action.yml").read_text(encoding="utf-8"))
STEPS = ACTION["runs"]["steps"]
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
INPUTS = {"model", "revision", "open-pr", "hf-token", "samples", "device", "fail-above", "baseline", "fail-on-regression",
          "extra-args"}
OUTPUTS = {"max-activation", "fp16-safe", "report-path", "m-ratio"}
TOKEN = "hf_secret_never_printed_123"


def step(step_id: str) -> dict:
    return next(s for s in STEPS if s.get("id") == step_id)


def step_text(s: dict) -> str:
    return yaml.safe_dump({k: s.get(k) for k in ("env", "run", "with", "if")})


# -- interface --------------------------------------------------------------------------------------
def test_action_is_composite_with_the_documented_interface():
    assert ACTION["runs"]["using"] == "composite"
    assert set(ACTION["inputs"]) == INPUTS
    assert set(ACTION["outputs"]) == OUTPUTS
    assert ACTION["inputs"]["model"]["required"] is True
    for name, spec in ACTION["inputs"].items():
        assert spec.get("description"), name
        if not spec.get("required"):
            assert isinstance(spec.get("default"), str), name
    for s in STEPS:
        assert s.get("id") and s.get("shell") == "bash" and s.get("run"), s


def test_every_input_is_used_by_a_step():
    text = "\n".join(step_text(s) for s in STEPS)
    for name in INPUTS:
        assert f"inputs.{name}" in text, name


def test_every_output_is_set_by_a_step():
    ids = {s["id"] for s in STEPS}
    for name, spec in ACTION["outputs"].items():
        m = re.fullmatch(r"\$\{\{\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}", spec["value"])
        assert m, spec["value"]
        sid, out = m.groups()
        assert sid in ids and out == name
        assert f'"{name}=' in step(sid)["run"], f"step {sid} never writes {name}"
        assert "$GITHUB_OUTPUT" in step(sid)["run"]


def test_token_reaches_the_cli_only_through_the_environment():
    for s in STEPS:
        assert "inputs.hf-token" not in s["run"], "expressions in run: are pasted into the script"
        assert "set -x" not in s["run"] and "HF_TOKEN" not in s["run"]
    assert step("audit")["env"]["HF_TOKEN"] == "${{ inputs.hf-token }}"
    # No input is pasted into a script: every one goes through env.
    for s in STEPS:
        assert not re.search(r"\$\{\{\s*inputs\.", s["run"])


def test_install_step_installs_torch_then_this_checkout():
    install = step("install")
    assert "pip" in install["run"] and "torch" in install["run"]
    assert install["env"]["MAXACT_PACKAGE"] == "${{ github.action_path }}/.."
    assert (ACTION_DIR / ".." / "pyproject.toml").is_file()


CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


@pytest.mark.parametrize("has_torch, has_gpu, device, torch_install", [
    (True, True, "", None),  # a runner that has torch keeps it
    (False, False, "", f"-m pip install --disable-pip-version-check --quiet torch {CPU_INDEX}"),
    (False, True, "cpu", f"-m pip install --disable-pip-version-check --quiet torch {CPU_INDEX}"),
    (False, True, "", "-m pip install --disable-pip-version-check --quiet torch"),
], ids=["torch-installed", "no-gpu", "gpu-but-cpu-asked", "gpu"])
def test_install_step_picks_the_torch_build_for_the_runner(tmp_path: Path, has_torch, has_gpu, device, torch_install):
    """With a `python` that records what it is asked and an `nvidia-smi` only where a GPU is."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "python.log"
    (bin_dir / "python").write_text(
        "#!/bin/bash\n"
        'if [ "$1" = -c ]; then exit ' + ("0" if has_torch else "1") + "; fi\n"
        f'echo "$*" >> "{log}"\n', encoding="utf-8")
    (bin_dir / "python").chmod(0o755)
    if has_gpu:
        (bin_dir / "nvidia-smi").write_text("#!/bin/bash\n", encoding="utf-8")
        (bin_dir / "nvidia-smi").chmod(0o755)
    proc = run_step("install", {"device": device}, {}, tmp_path, {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text(encoding="utf-8").splitlines()
    package = f"-m pip install --disable-pip-version-check --quiet {ACTION_DIR}/.."
    assert calls == ([torch_install] if torch_install else []) + [package]


def example_workflow() -> dict:
    text = (ACTION_DIR / "README.md").read_text(encoding="utf-8")
    return yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])


def test_readme_shows_a_release_workflow():
    text = (ACTION_DIR / "README.md").read_text(encoding="utf-8")
    workflow = example_workflow()
    assert workflow[True]["release"]["types"] == ["published"]  # YAML 1.1 reads the key `on` as True
    job = workflow["jobs"]["audit"]
    assert 0 < job["timeout-minutes"] <= 360  # GitHub's own limit is 6 hours
    uses = [s for s in job["steps"] if "uses" in s and "github_action" in s["uses"]]
    assert uses and set(uses[0]["with"]) <= INPUTS and "model" in uses[0]["with"]
    assert "revision" not in uses[0]["with"] and "samples" not in uses[0]["with"]  # the defaults
    cache = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert "~/.cache/pip" in cache["with"]["path"] and "~/.cache/huggingface/hub" in cache["with"]["path"]
    for name in INPUTS:
        assert f"`{name}`" in text
    for name in OUTPUTS:
        assert f"`{name}`" in text
    assert "RUNNER_TABLE" not in text and "| runner |" in text


# -- running the steps locally ----------------------------------------------------------------------
def _substitute(text: str, inputs: dict[str, str], outputs: dict[str, dict[str, str]]) -> str:
    def value(m: re.Match) -> str:
        expr = m.group(1)
        if expr.startswith("inputs."):
            name = expr[len("inputs."):]
            return inputs.get(name, ACTION["inputs"][name].get("default", ""))
        if expr == "github.action_path":
            return str(ACTION_DIR)
        sm = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expr)
        if sm:
            return outputs.get(sm.group(1), {}).get(sm.group(2), "")
        raise AssertionError(f"expression the local runner does not know: {expr}")

    return EXPR.sub(value, text)


def _read_outputs(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def run_step(
    step_id: str,
    inputs: dict[str, str],
    outputs: dict[str, dict[str, str]],
    tmp: Path,
    extra_env: Optional[dict[str, str]] = None,
) -> subprocess.CompletedProcess:
    """Run one step the way the runner does (bash --noprofile --norc -eo pipefail) and record its outputs."""
    s = step(step_id)
    script = tmp / f"{step_id}.sh"
    script.write_text(_substitute(s["run"], inputs, outputs), encoding="utf-8")
    gh_out = tmp / f"{step_id}.out"
    gh_out.write_text("", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    env["PATH"] = os.pathsep.join([str(tmp / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({"GITHUB_OUTPUT": str(gh_out), "RUNNER_TEMP": str(tmp / "runner"), "GITHUB_STEP_SUMMARY": str(tmp / "summary.md")})
    (tmp / "runner").mkdir(exist_ok=True)
    for k, v in (s.get("env") or {}).items():
        env[k] = _substitute(str(v), inputs, outputs)
    env.update(extra_env or {})
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    outputs[step_id] = _read_outputs(gh_out)
    return proc


def run_action(inputs: dict[str, str], tmp: Path, extra_env: Optional[dict[str, str]] = None):
    """The audit and outputs steps in order (install is left out: it needs the network)."""
    outputs: dict[str, dict[str, str]] = {}
    audit = run_step("audit", inputs, outputs, tmp, extra_env)
    if audit.returncode != 0:
        return audit, None, outputs
    out = run_step("outputs", inputs, outputs, tmp, extra_env)
    return audit, out, outputs


@pytest.fixture
def fake_cli(tmp_path: Path) -> Path:
    """A `maxact-card` on PATH that records its arguments and the token it sees, writes a report and
    exits with $FAKE_RC."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    report = tmp_path / "fixture_report.json"
    make_report().save(report)
    cli = bin_dir / "maxact-card"
    cli.write_text(
        "#!/usr/bin/env bash\n"
        f'printf "%s\\n" "$@" > "{tmp_path}/args.txt"\n'
        f'printf "%s" "${{HF_TOKEN:-}}" > "{tmp_path}/token.txt"\n'
        'out=""\n'
        'while [ $# -gt 0 ]; do if [ "$1" = --output-dir ]; then out="$2"; fi; shift; done\n'
        'mkdir -p "$out"\n'
        f'if [ "${{FAKE_RC:-0}}" != 2 ]; then cp "{report}" "$out/maxact_report.json"; fi\n'
        'echo "M = 7.12e+05"\n'
        'exit "${FAKE_RC:-0}"\n',
        encoding="utf-8",
    )
    cli.chmod(0o755)
    return tmp_path


def test_steps_pass_every_input_to_the_cli(fake_cli: Path):
    inputs = {
        "model": "acme/tiny-moe-4l", "revision": "v1.0", "open-pr": "true", "hf-token": TOKEN,
        "samples": "8", "device": "cpu", "fail-above": "1e9", "baseline": "previous", "fail-on-regression": "1.2",
        "extra-args": "--dtype float32  --max-seq-len 64",
    }
    audit, out, outputs = run_action(inputs, fake_cli)
    assert audit.returncode == 0, audit.stderr
    assert out.returncode == 0, out.stderr
    args = (fake_cli / "args.txt").read_text(encoding="utf-8").splitlines()
    out_dir = str(fake_cli / "runner")
    assert args[:2] == ["audit", "acme/tiny-moe-4l"]
    assert args[2] == "--output-dir" and args[3].startswith(out_dir)
    assert args[4:] == ["--revision", "v1.0", "--open-pr", "--samples", "8", "--device", "cpu",
                        "--fail-above", "1e9", "--baseline", "previous", "--fail-on-regression", "1.2",
                        "--dtype", "float32", "--max-seq-len", "64"]
    assert (fake_cli / "token.txt").read_text(encoding="utf-8") == TOKEN
    for proc in (audit, out):
        assert TOKEN not in proc.stdout + proc.stderr
    report = make_report()
    got = outputs["outputs"]
    assert float(got["max-activation"]) == report.peak.abs
    assert got["fp16-safe"] == "false"
    assert got["report-path"] == args[3] + "/maxact_report.json" and Path(got["report-path"]).is_file()
    assert "acme/tiny-moe-4l" in (fake_cli / "summary.md").read_text(encoding="utf-8")


def test_non_finite_activations_are_never_reported_safe(fake_cli: Path):
    """A model computing NaN/Inf: the outputs say so (M = inf, not fp16-safe), never 'safe'."""
    import dataclasses
    import math

    base = make_report()
    peak = dataclasses.replace(base.peak, value=math.inf, abs=math.inf, nonfinite=3, finite_abs=base.peak.abs)
    dataclasses.replace(base, peak=peak, fp16_safe=False).save(fake_cli / "fixture_report.json")
    audit, out, outputs = run_action({"model": "m"}, fake_cli)
    assert audit.returncode == 0 and out.returncode == 0, out.stderr
    assert outputs["outputs"]["max-activation"] == "inf" and outputs["outputs"]["fp16-safe"] == "false"
    summary = (fake_cli / "summary.md").read_text(encoding="utf-8")
    assert "M = not finite (NaN/Inf)" in summary and "**not fp16-safe**" in summary


def test_optional_inputs_are_left_out_when_empty(fake_cli: Path):
    local = fake_cli / "ckpt"
    local.mkdir()
    audit, out, outputs = run_action({"model": str(local)}, fake_cli)
    assert audit.returncode == 0 and out.returncode == 0, audit.stderr + (out.stderr if out else "")
    args = (fake_cli / "args.txt").read_text(encoding="utf-8").splitlines()
    assert args[:3] == ["audit", str(local), "--output-dir"] and len(args) == 4  # no revision for a local path
    assert (fake_cli / "token.txt").read_text(encoding="utf-8") == ""
    run_action({"model": "org/model"}, fake_cli)
    args = (fake_cli / "args.txt").read_text(encoding="utf-8").splitlines()
    assert args[4:] == ["--revision", "main"]  # a Hub repo: main unless told otherwise


def test_fail_above_sets_outputs_then_fails_with_code_3(fake_cli: Path):
    audit, out, outputs = run_action({"model": "m", "fail-above": "10"}, fake_cli, {"FAKE_RC": "3"})
    assert audit.returncode == 0, audit.stderr
    assert out.returncode == 3
    assert "fail-above" in out.stdout
    assert float(outputs["outputs"]["max-activation"]) == make_report().peak.abs


def test_the_baseline_ratio_is_an_output_and_a_regression_fails_the_step(fake_cli: Path):
    from maxact_card.comparison import baseline_change

    report = make_report(scale=1.5)
    change = baseline_change(report, make_report(), "previous")
    import dataclasses

    dataclasses.replace(report, baseline=change).save(fake_cli / "fixture_report.json")
    audit, out, outputs = run_action({"model": "m", "baseline": "previous", "fail-on-regression": "1.2"}, fake_cli,
                                     {"FAKE_RC": "3"})
    assert audit.returncode == 0 and out.returncode == 3
    assert float(outputs["outputs"]["m-ratio"]) == change.ratio == pytest.approx(1.5)
    assert "regressed against the baseline (fail-on-regression 1.2)" in out.stdout
    assert ", 1.5x the M of the baseline (acme/tiny-moe-4l)" in (fake_cli / "summary.md").read_text(encoding="utf-8")
    # Without a baseline the output is empty.
    make_report().save(fake_cli / "fixture_report.json")
    _, _, outputs = run_action({"model": "m"}, fake_cli)
    assert outputs["outputs"]["m-ratio"] == ""


def test_other_cli_errors_fail_the_audit_step(fake_cli: Path):
    audit, out, _ = run_action({"model": "m"}, fake_cli, {"FAKE_RC": "2"})
    assert audit.returncode == 2 and out is None


def test_bad_open_pr_value_is_refused(fake_cli: Path):
    audit, out, _ = run_action({"model": "m", "open-pr": "maybe"}, fake_cli)
    assert audit.returncode == 2 and "open-pr" in audit.stdout
    assert not (fake_cli / "args.txt").exists()


# -- with the real CLI and a tiny model -------------------------------------------------------------
@pytest.mark.slow
def test_action_runs_the_real_cli_on_a_tiny_model(tmp_path: Path):
    from models import tiny_model, tiny_tokenizer

    ckpt = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(ckpt)
    tiny_tokenizer().save_pretrained(ckpt)
    (tmp_path / "bin").mkdir()
    cli_path = Path(sys.executable).parent / "maxact-card"
    assert cli_path.exists(), "the package's console script is not installed in this environment"

    inputs = {
        "model": str(ckpt), "samples": "4", "device": "cpu", "fail-above": "1e-12",
        "extra-args": "--max-seq-len 32 --no-quant-check --no-progress --batch-size 2",
    }
    audit, out, outputs = run_action(inputs, tmp_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert out.returncode == 3, out.stdout + out.stderr  # M is above 1e-12: outputs set, then exit 3
    got = outputs["outputs"]
    from maxact_card.report import Report

    report = Report.load(got["report-path"])
    assert report.peak is not None and float(got["max-activation"]) == report.peak.abs
    assert got["fp16-safe"] == ("true" if report.fp16_safe else "false")
    assert report.corpus.samples == 4 and report.model.device == "cpu"


@pytest.mark.slow
def test_action_opens_the_card_pull_request_on_the_test_hub(hub, tmp_path: Path):
    """The audit and outputs steps with the real CLI against the Hub test server: a tiny model repo,
    pinned to a revision, gets its pull request; the token is used and never printed."""
    from hubserver import read_dir
    from models import save_tiny
    from maxact_card.publish import FILES, PR_TITLE
    from maxact_card.report import Report

    sha = hub.create_repo("org/tiny", read_dir(save_tiny(tmp_path / "ckpt")))
    hub.add_commit("org/tiny", {"README.md": b"# later\n"})  # main moves on; the audit stays on `sha`
    hub.add_token(TOKEN, user="alice", role="write")
    (tmp_path / "bin").mkdir()
    inputs = {"model": "org/tiny", "revision": sha, "open-pr": "true", "hf-token": TOKEN, "samples": "4",
              "device": "cpu", "extra-args": "--max-seq-len 32 --no-quant-check --no-progress"}
    audit, out, outputs = run_action(inputs, tmp_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert out.returncode == 0, out.stdout + out.stderr
    for proc in (audit, out):
        assert TOKEN not in proc.stdout + proc.stderr
    assert f"pull request: {hub.url}/org/tiny/discussions/1" in audit.stdout

    pr, = hub.pull_requests("org/tiny")
    assert (pr.title, pr.author, pr.base_sha) == (PR_TITLE, "alice", sha)
    files = hub.files_at("org/tiny", "refs/pr/1")
    assert set(FILES) <= set(files)
    report = Report.load(outputs["outputs"]["report-path"])
    assert report.model.revision == sha and Report.from_json(files["maxact_report.json"].decode()) == report
    assert float(outputs["outputs"]["max-activation"]) == report.peak.abs
    assert outputs["outputs"]["fp16-safe"] == "true"


@pytest.mark.slow
def test_the_example_workflow_runs_with_its_defaults_against_the_test_hub(hub, tmp_path: Path):
    """The README's workflow, its action step's inputs exactly as written (the secret filled in),
    on a tiny model published as my-org/my-model: the first release opens the pull request; after it
    is merged, the next release finds the card up to date before downloading anything, and passes."""
    from hubserver import read_dir
    from models import save_tiny

    step_inputs = next(s for s in example_workflow()["jobs"]["audit"]["steps"] if s.get("id") == "maxact")["with"]
    inputs = {k: str(v).replace("${{ secrets.HF_TOKEN }}", TOKEN) for k, v in step_inputs.items()}
    repo = inputs["model"]
    hub.create_repo(repo, read_dir(save_tiny(tmp_path / "ckpt")))
    hub.add_token(TOKEN, user="alice", role="write")
    (tmp_path / "bin").mkdir()
    audit, out, outputs = run_action(inputs, tmp_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert out.returncode == 0, out.stdout + out.stderr
    assert "nothing to compare with (a first audit)" in audit.stderr
    assert len(hub.pull_requests(repo)) == 1 and outputs["outputs"]["m-ratio"] == ""
    hub.add_commit(repo, hub.files_at(repo, "refs/pr/1"), message="Merge pull request #1")
    with hub.lock:
        hub.repo(repo).discussions[0].status = "merged"
    audit, out, outputs = run_action(inputs, tmp_path)
    assert audit.returncode == 0 and out.returncode == 0, audit.stdout + audit.stderr
    assert "nothing to do before any download" in audit.stdout
    assert outputs["outputs"]["m-ratio"] == "1.0" and len(hub.pull_requests(repo)) == 1
    for proc in (audit, out):
        assert TOKEN not in proc.stdout + proc.stderr
