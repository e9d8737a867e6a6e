"""`maxact-card audit --models FILE`: several models in one command, resumable, past failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, invoke
from maxact_card.report import Report
from models import save_tiny

SMALL = ["--samples", "8", "--max-seq-len", "32", "--calib-samples", "4", "--no-progress"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("batch")
    return {"llama": save_tiny(root / "llama"), "qwen3": save_tiny(root / "qwen3", "qwen3", seed=1)}


def table_of(stdout: str) -> list[str]:
    """The compare table that ends the output (each audit's summary comes before it)."""
    lines = stdout.splitlines()
    return lines[max(i for i, line in enumerate(lines) if line.startswith("model  ")):]


def run(list_file: Path, out: Path, *extra: str):
    return invoke(["audit", "--models", str(list_file), *SMALL, "-o", str(out), *extra])


def test_three_models_one_broken_finish_the_others_and_resume(hub, tiny, tmp_path: Path):
    from hubserver import read_dir

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    sha = hub.create_repo("acme/qwen3", read_dir(tiny["qwen3"]))
    models = tmp_path / "models.txt"
    models.write_text(f"# three models\n{tiny['llama']}\n\n{broken}\nacme/qwen3 main  # a Hub repo at a branch\n",
                      encoding="utf-8")
    out = tmp_path / "runs"
    result = run(models, out)
    assert result.exit_code == 2, result.output
    llama, qwen = out / "maxact-llama" / "maxact_report.json", out / "maxact-qwen3@main" / "maxact_report.json"
    assert Report.load(qwen).model.revision == sha and Report.load(llama).model.id == "llama"
    assert not (out / "maxact-broken").exists()
    assert "3 models: 2 audited, 0 skipped (up to date), 1 failed" in result.stderr
    assert f"failed: {broken} (line 4): {broken} has a config.json but no weight files" in result.stderr
    assert_one_line_error(result, "1 of 3 models failed", "run the same command again")
    table = table_of(result.stdout)
    assert table[0].split()[:3] == ["model", "revision", "M"] and len(table) == 4
    assert [line.split()[0] for line in table[2:4]] == ["llama", "acme/qwen3"]
    assert table[3].split()[1] == sha[:12] and table[2].rstrip().endswith("reference")
    before = {p: p.stat().st_mtime_ns for p in (llama, qwen)}

    # Again: the two finished models are skipped (their reports untouched), the broken one is retried.
    result = run(models, out)
    assert result.exit_code == 2
    assert "3 models: 0 audited, 2 skipped (up to date), 1 failed" in result.stderr
    assert result.stderr.count("skipped: ") == 2 and "loading" not in result.stderr
    assert {p: p.stat().st_mtime_ns for p in (llama, qwen)} == before
    assert result.stdout.splitlines()[1:] == table  # no summary: nothing was audited; the table lists both

    # Fixed, the broken one is audited and nothing else.
    broken.rename(tmp_path / "broken-old")
    save_tiny(broken)
    result = run(models, out)
    assert result.exit_code == 0, result.output
    assert "3 models: 1 audited, 2 skipped (up to date), 0 failed" in result.stderr
    assert (out / "maxact-broken" / "maxact_report.json").is_file()


def test_other_settings_or_weights_are_audited_again(tiny, tmp_path: Path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny["llama"], model)
    models = tmp_path / "models.txt"
    models.write_text(f"{model}\n", encoding="utf-8")
    out = tmp_path / "o"
    assert run(models, out).exit_code == 0
    assert "0 skipped" in run(models, out, "--seed", "1").stderr  # another seed: other samples
    assert "1 skipped" in run(models, out, "--seed", "1").stderr
    shutil.copy(tiny["qwen3"] / "model.safetensors", model / "model.safetensors")  # other weights, same path
    shutil.copy(tiny["qwen3"] / "config.json", model / "config.json")
    result = run(models, out, "--seed", "1")
    assert "1 audited, 0 skipped" in result.stderr, result.output


@pytest.mark.parametrize("text, needles", [
    ("", ["lists no model"]),
    ("# only a comment\n", ["lists no model"]),
    ("a/b main extra\n", ["line 1", "3 words", "MODEL [REVISION]"]),
    ("a/b\n'unclosed\n", ["line 2", "quote"]),
    ("a/b\nc/d\na/b\n", ["lines 1 and 3", "maxact-b"]),
])
def test_bad_model_lists_get_one_line_before_any_audit(tmp_path: Path, text, needles):
    models = tmp_path / "models.txt"
    models.write_text(text, encoding="utf-8")
    result = run(models, tmp_path / "o")
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, needles", [
    (["some/model", "--models", "x.txt"], ["one MODEL", "not both"]),
    ([], ["one MODEL", "--models FILE"]),
    (["--models", "x.txt", "--revision", "v1"], ["--revision applies to one model", "on its line"]),
    (["--models", "missing.txt"], ["--models missing.txt: no such file"]),
])
def test_model_and_models_options(tmp_path: Path, monkeypatch, args, needles):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("a/b\n", encoding="utf-8")
    assert_one_line_error(invoke(["audit", *args]), *needles)


def test_a_local_checkpoint_gets_the_weights_fingerprint_the_hub_gives_its_upload(hub, tiny, tmp_path: Path):
    """What lets a local report and the uploaded copy's be recognised as the same weights."""
    from hubserver import read_dir
    from maxact_card.hub import Hub
    from maxact_card.weights import local_fingerprint

    sha = hub.create_repo("acme/llama", read_dir(tiny["llama"]))
    local = local_fingerprint(tiny["llama"])
    assert local is not None and local == Hub(endpoint=hub.url).weights_fingerprint("acme/llama", sha)
    assert local != local_fingerprint(tiny["qwen3"])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert local_fingerprint(empty) is None


def test_a_kept_report_is_still_published_and_checked(tiny, tmp_path: Path):
    """Resuming never skips what the first run may not have finished: the card is written (again,
    identically) and the thresholds apply to the kept report."""
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny["llama"], model)
    models = tmp_path / "models.txt"
    models.write_text(f"{model}\n", encoding="utf-8")
    out = tmp_path / "o"
    assert run(models, out, "--write-card").exit_code == 0
    card = (model / "README.md").read_bytes()
    (model / "README.md").unlink()
    result = run(models, out, "--write-card")
    assert result.exit_code == 0 and "1 skipped" in result.stderr, result.output
    assert (model / "README.md").read_bytes() == card
    result = run(models, out, "--fail-above", "0.5")
    assert "1 skipped" in result.stderr and result.exit_code == 3
    assert_one_line_error(result, "1 of 1 models crossed --fail-above")
    assert f"over a threshold: {model} (line 1): M = " in result.stderr
    # A baseline asked for on a rerun is compared with the kept report, without measuring again.
    result = run(models, out, "--baseline", str(out / "maxact-m"))
    assert result.exit_code == 0 and "1 skipped" in result.stderr and "loading" not in result.stderr
    assert Report.load(out / "maxact-m" / "maxact_report.json").baseline.ratio == 1.0
