"""A local checkpoint's identity: a name, never a path of the machine, and the weights fingerprint the
Hub gives the same files, so that the uploaded copy is recognised as the same checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, invoke
from maxact_card.loading import local_name
from maxact_card.report import Report
from models import save_tiny

SMALL = ["--samples", "8", "--max-seq-len", "32", "--calib-samples", "4", "--no-progress"]
WRITE = "hf_writer_token_identity_0123456789"


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return save_tiny(tmp_path / "machine" / "private" / "tiny-llama")


def machine_paths(tmp_path: Path) -> list[str]:
    return [str(tmp_path), str(tmp_path.resolve()), os.path.expanduser("~") + os.sep, os.getcwd() + os.sep]


def assert_no_path(data: bytes, tmp_path: Path, what: str) -> None:
    text = data.decode("utf-8", errors="replace")
    for p in machine_paths(tmp_path):
        assert p not in text, f"{what} holds {p}"


def test_write_card_publishes_no_path_of_the_machine(ckpt: Path, tmp_path: Path):
    corpus = tmp_path / "machine" / "data" / "my-corpus.jsonl"
    corpus.parent.mkdir(parents=True)
    corpus.write_text("".join(json.dumps({"text": f"w{i} w{i + 1} w{i + 2} w5"}) + "\n" for i in range(4, 40)),
                      encoding="utf-8")
    template = tmp_path / "machine" / "section.md.j2"
    template.write_text('{% extends "activation_range.md.j2" %}', encoding="utf-8")
    out = tmp_path / "machine" / "out"
    result = invoke(["audit", str(ckpt), *SMALL, "--corpus", str(corpus), "--template", str(template),
                     "--write-card", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = Report.load(out / "maxact_report.json")
    assert report.model.id == "tiny-llama" and report.model.weights.startswith("sha256:")
    assert "the report and the card name it tiny-llama (from its folder name; --model-name names it otherwise)" \
        in result.stderr
    assert report.command.startswith("maxact-card audit tiny-llama --corpus my-corpus.jsonl --samples 8")
    assert "--corpus my-corpus.jsonl" in report.command and "--template" not in report.command
    assert report.corpus.name == "my-corpus.jsonl"
    written = {name: (ckpt / name).read_bytes() for name in ("README.md", "maxact_report.json", "maxact_layers.png")}
    written["output report"] = (out / "maxact_report.json").read_bytes()
    for what, data in written.items():
        assert_no_path(data, tmp_path, what)
    card = written["README.md"].decode()
    assert "revision: ''" not in card and "weights: ''" not in card and "weights: sha256:" in card


def test_model_name_and_config_name_or_path(ckpt: Path, tmp_path: Path):
    result = invoke(["audit", str(ckpt), *SMALL, "--model-name", "acme/tiny-llama", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    report = Report.load(tmp_path / "o" / "maxact_report.json")
    assert report.model.id == report.model.name == "acme/tiny-llama"
    assert report.command.startswith("maxact-card audit acme/tiny-llama ") and "--model-name" not in report.command
    config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    for recorded, expected in (("acme/base-7b", ("acme/base-7b", "config.json _name_or_path")),
                               ("/home/me/runs/ckpt-500", ("tiny-llama", "folder name")),
                               ("./ckpt", ("tiny-llama", "folder name"))):
        (ckpt / "config.json").write_text(json.dumps({**config, "_name_or_path": recorded}), encoding="utf-8")
        assert local_name(str(ckpt), None) == expected
    assert local_name(str(ckpt), "x/y") == ("x/y", "--model-name")
    assert local_name(str(tmp_path / "a" / "m.Q4.gguf"), None) == ("m.Q4.gguf", "file name")


@pytest.mark.parametrize("args, needles", [
    (["acme/model", "--model-name", "x/y"], ["--model-name names a local checkpoint", "acme/model is a Hub repo"]),
    (["{ckpt}", "--model-name", "./here"], ["--model-name must be a name such as my-org/my-model"]),
    (["{ckpt}", "--model-name", "a b"], ["--model-name must be a name"]),
])
def test_bad_model_names(ckpt: Path, tmp_path: Path, args, needles):
    args = [a.replace("{ckpt}", str(ckpt)) for a in args]
    result = invoke(["audit", *args, *SMALL, "-o", str(tmp_path / "o")])
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "o").exists()


def test_the_uploaded_copy_of_a_carded_checkpoint_needs_no_pull_request(hub, ckpt: Path, tmp_path: Path):
    """--write-card before upload, then --open-pr on the Hub copy: the same weights and settings,
    so nothing to do, and no pull request."""
    from hubserver import read_dir

    result = invoke(["audit", str(ckpt), *SMALL, "--write-card", "-o", str(tmp_path / "local")])
    assert result.exit_code == 0, result.output
    hub.add_token(WRITE, user="alice", role="write")
    hub.create_repo("acme/tiny-llama", read_dir(ckpt))
    result = invoke(["audit", "acme/tiny-llama", *SMALL, "--open-pr", "--token", WRITE, "-o", str(tmp_path / "hub")])
    assert result.exit_code == 0, result.output
    assert "already carries an activation range for these settings; nothing to do before any download" in result.output
    assert hub.pull_requests("acme/tiny-llama") == [] and hub.request_count(contains="model.safetensors") == 0
    local = Report.load(tmp_path / "local" / "maxact_report.json")
    remote = Report.load(tmp_path / "hub" / "maxact_report.json")
    assert local.model.weights == remote.model.weights and local.peak == remote.peak


def test_pull_request_files_hold_no_path_of_the_machine(hub, ckpt: Path, tmp_path: Path):
    from hubserver import read_dir

    corpus = tmp_path / "machine" / "c.txt"
    corpus.write_text("\n\n".join(f"w{i} w{i + 3} w9" for i in range(4, 30)), encoding="utf-8")
    hub.add_token(WRITE, user="alice", role="write")
    hub.create_repo("acme/tiny-llama", read_dir(ckpt))
    result = invoke(["audit", "acme/tiny-llama", *SMALL, "--corpus", str(corpus), "--open-pr", "--token", WRITE,
                     "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    (pr,) = hub.pull_requests("acme/tiny-llama")
    files = hub.files_at("acme/tiny-llama", "refs/pr/1")
    for name in ("README.md", "maxact_report.json", "maxact_layers.png"):
        assert_no_path(files[name], tmp_path, name)
    assert_no_path(json.dumps(pr.events).encode(), tmp_path, "the pull request's description")
