"""Data parallel on torch.distributed: 2 CPU processes on gloo through torchrun give the report of a
single process on the same samples; processes that disagree, or one that dies, end the run with one
line from process 0 and no report."""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maxact_card.report import Report
from models import save_tiny

HERE = Path(__file__).parent
ARGS = ["--samples", "10", "--calib-samples", "4", "--max-seq-len", "24", "--batch-size", "2", "--no-progress",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = save_tiny(tmp_path_factory.mktemp("ddp") / "tiny", "llama", seed=4)
    # A massive activation on a common token, so the probe's costlier modes and the tie rules run.
    from safetensors.torch import load_file, save_file

    weights = load_file(path / "model.safetensors")
    weights["model.embed_tokens.weight"][3, 7] = 2500.0  # <unk>: most of the builtin corpus, for this vocabulary
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    return path


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAXACT_TEST_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]))
    return env


def single(checkpoint, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maxact_card", "audit", str(checkpoint), *ARGS, *extra, "-o", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=300)


def torchrun(checkpoint, out: Path, logs: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--log-dir", str(logs), "--redirects", "3", str(HERE / "dist_launch.py"), "audit", str(checkpoint),
           *ARGS, *extra, "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**_env(), **(env or {})}, timeout=300)


def rank_log(logs: Path, rank: int, stream: str = "stderr") -> str:
    (path,) = glob.glob(str(logs / "**" / "attempt_0" / str(rank) / f"{stream}.log"), recursive=True)
    return Path(path).read_text()


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b))


SUMS = {"mean", "std", "rms"}


def assert_same_measurement(one: Report, two: Report) -> None:
    assert len(one.sites) == len(two.sites)
    for a, b in zip(one.sites, two.sites):
        for field in a.__dataclass_fields__:
            x, y = getattr(a, field), getattr(b, field)
            if field in SUMS:
                assert _close(x, y), (a.name, field, x, y)
            else:
                assert x == y, (a.name, field)  # maxima, locations, top rows, counts, histogram quantiles
    assert one.peak == two.peak and one.kinds == two.kinds and one.fp16_safe == two.fp16_safe
    assert one.headroom == two.headroom and one.corpus == two.corpus
    q1, q2 = one.quant, two.quant
    for a, b in zip(q1.sites, q2.sites):
        assert (a.site, a.format) == (b.site, b.format) and a.clip_rate == b.clip_rate
        for f in ("sqnr_db", "rel_rmse", "rel_mae"):
            assert _close(getattr(a, f), getattr(b, f)), (a.site, a.format, f)
    assert _close(q1.baseline_nll, q2.baseline_nll)
    for a, b in zip(q1.end_to_end, q2.end_to_end):
        assert a.format == b.format and _close(a.nll, b.nll) and _close(a.delta_nll, b.delta_nll)
    assert q1.verdicts == q2.verdicts and q1.recommendation == q2.recommendation


def test_two_gloo_processes_give_the_single_process_report(checkpoint, tmp_path):
    ref = single(checkpoint, tmp_path / "one")
    assert ref.returncode == 0, ref.stderr
    run = torchrun(checkpoint, tmp_path / "two", tmp_path / "logs")
    assert run.returncode == 0, run.stderr + rank_log(tmp_path / "logs", 0) + rank_log(tmp_path / "logs", 1)
    one = Report.load(tmp_path / "one" / "maxact_report.json")
    two = Report.load(tmp_path / "two" / "maxact_report.json")
    assert one.processes == 1 and two.processes == 2
    assert any(s.massive for s in two.sites) and two.peak.abs >= 2500.0
    assert_same_measurement(one, two)
    assert "2 processes (data parallel)" in rank_log(tmp_path / "logs", 0, "stdout")
    assert rank_log(tmp_path / "logs", 1, "stdout") == ""  # process 0 alone reports and writes
    assert json.loads((tmp_path / "two" / "maxact_report.json").read_text())["processes"] == 2


def test_accelerate_launch_gives_the_single_process_report(checkpoint, tmp_path):
    ref = single(checkpoint, tmp_path / "one")
    assert ref.returncode == 0, ref.stderr
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
           "-m", "maxact_card", "audit", str(checkpoint), *ARGS, "-o", str(tmp_path / "two")]
    run = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert run.returncode == 0, run.stderr
    two = Report.load(tmp_path / "two" / "maxact_report.json")
    assert two.processes == 2
    assert_same_measurement(Report.load(tmp_path / "one" / "maxact_report.json"), two)


def test_processes_started_with_other_options_end_with_one_line(checkpoint, tmp_path):
    run = torchrun(checkpoint, tmp_path / "out", tmp_path / "logs", env={"MAXACT_TEST_RANK_ARGS": "1:--seed=1"})
    assert run.returncode != 0
    err = rank_log(tmp_path / "logs", 0).strip().splitlines()
    assert err == [err[0]] and err[0].startswith("Error: processes 1 were started with other options"), err
    assert rank_log(tmp_path / "logs", 1).strip() == ""
    assert not (tmp_path / "out").exists()


def test_a_process_that_dies_ends_the_run_with_one_line_and_no_file(checkpoint, tmp_path):
    run = torchrun(checkpoint, tmp_path / "out", tmp_path / "logs", env={"MAXACT_TEST_DIE_RANK": "1"})
    assert run.returncode != 0
    log = rank_log(tmp_path / "logs", 0)
    errors = [line for line in log.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "process" in errors[0] and "nothing was written" in errors[0], log
    assert "Traceback" not in log
    assert not (tmp_path / "out" / "maxact_report.json").exists()
    assert not list(tmp_path.glob("out/*.tmp")) and not list(tmp_path.glob("out/.*.tmp"))


def test_a_model_list_runs_under_the_launcher_each_audit_on_both_processes(checkpoint, tmp_path):
    """--models under torchrun: one process group per audit, each report merged from both processes;
    a second run skips both models on every process."""
    other = save_tiny(tmp_path / "other", "qwen3", seed=2)
    models = tmp_path / "models.txt"
    models.write_text(f"{checkpoint}\n{other}\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--log-dir", str(tmp_path / "logs"), "--redirects", "3", str(HERE / "dist_launch.py"), "audit",
           "--models", str(models), *ARGS, "-o", str(tmp_path / "runs")]
    run = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert run.returncode == 0, run.stderr + rank_log(tmp_path / "logs", 0) + rank_log(tmp_path / "logs", 1)
    for name in ("maxact-tiny", "maxact-other"):
        assert Report.load(tmp_path / "runs" / name / "maxact_report.json").processes == 2
    assert "2 models: 2 audited" in rank_log(tmp_path / "logs", 0)
    cmd[cmd.index("--log-dir") + 1] = str(tmp_path / "logs2")
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert again.returncode == 0, again.stderr
    assert "2 models: 0 audited, 2 skipped" in rank_log(tmp_path / "logs2", 0)
