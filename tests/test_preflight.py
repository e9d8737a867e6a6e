"""What can be known before the weights are downloaded is checked before: a card that already carries
this measurement, a read-only token, a template that does not parse, a device that is not there."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, invoke
from maxact_card.card import settings_key
from maxact_card.readme_merge import extract_metadata
from maxact_card.report import Report
from models import save_tiny

REPO = "org/tiny"
SMALL = ["--samples", "8", "--max-seq-len", "32", "--calib-samples", "4", "--no-progress"]
WRITE = "hf_preflight_writer_0123456789"


@pytest.fixture
def published(hub, tmp_path_factory) -> str:
    """org/tiny whose card carries the report of an audit with SMALL (its pull request merged)."""
    from hubserver import read_dir

    ckpt = save_tiny(tmp_path_factory.mktemp("pre") / "tiny")
    hub.add_token(WRITE, user="alice", role="write")
    hub.create_repo(REPO, read_dir(ckpt))
    result = invoke(["audit", REPO, *SMALL, "--open-pr", "--token", WRITE, "-o", str(tmp_path_factory.mktemp("o1"))])
    assert result.exit_code == 0, result.output
    merged = hub.add_commit(REPO, hub.files_at(REPO, "refs/pr/1"), message="Merge pull request #1")
    with hub.lock:
        hub.repo(REPO).discussions[0].status = "merged"
    return merged


def weight_requests(hub) -> int:
    return hub.request_count(contains="model.safetensors")


def test_the_same_measurement_is_found_before_any_download(hub, published: str, tmp_path: Path):
    before = weight_requests(hub)
    result = invoke(["audit", REPO, *SMALL, "--open-pr", "--token", WRITE, "-o", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert f"{REPO}@{published[:12]} already carries an activation range for these settings; nothing to do before " \
           "any download" in result.output
    assert weight_requests(hub) == before and "loading" not in result.stderr
    # The card's report is saved where the report goes (the Action reads its outputs from it).
    report = Report.load(tmp_path / "again" / "maxact_report.json")
    card = hub.files_at(REPO)["README.md"].decode()
    assert extract_metadata(card)["settings_key"] == settings_key(report)
    assert len(hub.pull_requests(REPO)) == 1


@pytest.mark.parametrize("changed", [["--seed", "1"], ["--calib-samples", "3"], ["--clip-percentiles", "99.9"],
                                     ["--formats", "int8_per_token"], ["--dtype", "float32"]])
def test_every_option_that_changes_a_number_is_in_the_settings_key(hub, published: str, tmp_path: Path, changed):
    result = invoke(["audit", REPO, *SMALL, *changed, "--open-pr", "--token", WRITE, "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "nothing to do" not in result.output and "opened pull request #2" in result.output


def test_force_measures_again(hub, published: str, tmp_path: Path):
    result = invoke(["audit", REPO, *SMALL, "--open-pr", "--force", "--token", WRITE, "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "loading" in result.stderr and "nothing to do before" not in result.output


def test_fail_above_applies_to_the_report_found_on_the_card(hub, published: str, tmp_path: Path):
    result = invoke(["audit", REPO, *SMALL, "--open-pr", "--token", WRITE, "--fail-above", "1e-6",
                     "-o", str(tmp_path / "o")])
    assert result.exit_code == 3 and "loading" not in result.stderr
    assert_one_line_error(result, "exceeds --fail-above 1e-06")


def test_a_template_that_does_not_parse_is_refused_before_the_audit(tmp_path: Path):
    ckpt = save_tiny(tmp_path / "m")
    bad = tmp_path / "bad.md.j2"
    bad.write_text("## Mine\n{% if peak %}\nno end\n", encoding="utf-8")
    result = invoke(["audit", str(ckpt), *SMALL, "--write-card", "--template", str(bad), "-o", str(tmp_path / "o")])
    assert_one_line_error(result, f"template {bad}, line", "fix the template")
    assert "loading" not in result.stderr and not (tmp_path / "o").exists() and not (ckpt / "README.md").exists()


def test_a_device_that_is_not_there_is_refused_before_the_download(hub, tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from hubserver import read_dir

    hub.create_repo(REPO, read_dir(save_tiny(tmp_path / "m")))
    result = invoke(["audit", REPO, *SMALL, "--device", "cuda", "-o", str(tmp_path / "o")])
    assert_one_line_error(result, "--device cuda: no CUDA device is available here")
    assert weight_requests(hub) == 0
