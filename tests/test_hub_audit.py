"""`maxact-card audit OWNER/NAME` against the local Hub server, through the CLI and the real client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maxact_card.report import Report
from cli_helpers import assert_one_line_error, invoke
from models import save_tiny

REPO = "org/tiny-llama"
SMALL = ["--samples", "8", "--max-seq-len", "32", "--no-quant-check", "--no-progress"]
READ_TOKEN = "hf_reader_token_0123456789abcdef"
# Files that loading never needs: they must not be downloaded.
EXTRAS = {
    "README.md": b"---\nlicense: mit\n---\n# Tiny llama\n",
    "original/consolidated.pth": b"\x00\x01" * 2048,
    "image.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
}




@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, bytes]:
    """A saved tiny llama (weights, config, tokenizer) plus files that loading never needs."""
    from hubserver import read_dir

    files = read_dir(save_tiny(tmp_path_factory.mktemp("hubckpt") / "tiny-llama"))
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files
    return {**files, **EXTRAS}


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory) -> bytes:
    """model.safetensors of the same architecture with other random weights."""
    return (save_tiny(tmp_path_factory.mktemp("hubckpt2") / "t", seed=1) / "model.safetensors").read_bytes()


@pytest.fixture
def two_revisions(hub, tiny_files, other_weights) -> tuple[str, str]:
    first = hub.create_repo(REPO, tiny_files)
    second = hub.add_commit(REPO, {"model.safetensors": other_weights}, message="new weights")
    assert first != second
    return first, second


def test_audit_of_a_pinned_revision_downloads_only_what_loading_needs(hub, two_revisions, tmp_path: Path):
    first, second = two_revisions
    out1 = tmp_path / "first"
    result = invoke(["audit", REPO, "--revision", first, *SMALL, "-o", str(out1)])
    assert result.exit_code == 0, result.output
    r1 = Report.load(out1 / "maxact_report.json")
    assert (r1.model.id, r1.model.source, r1.model.revision) == (REPO, "hub", first)
    assert (r1.model.model_type, r1.model.num_layers, r1.model.gguf_file) == ("llama", 2, None)
    assert f"maxact-card 0.1.0  {REPO} @ {first[:12]}" in result.stdout
    requested = hub.requested_files(REPO)
    assert not requested & set(EXTRAS), requested
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= requested
    assert all("/" not in path for path in requested)

    out2 = tmp_path / "main"
    result = invoke(["audit", REPO, *SMALL, "-o", str(out2)])
    assert result.exit_code == 0, result.output
    r2 = Report.load(out2 / "maxact_report.json")
    assert r2.model.revision == second
    assert r2.corpus.fingerprint == r1.corpus.fingerprint  # same tokens, other weights
    assert r2.peak.abs != r1.peak.abs
    assert not hub.requested_files(REPO) & set(EXTRAS)


def test_branch_name_is_resolved_to_a_sha(hub, two_revisions, tmp_path: Path):
    first, _ = two_revisions
    hub.add_commit(REPO, {"notes.txt": b"x"}, ref="v1")  # branch v1 from main's head
    v1 = hub.head(REPO, "v1")
    result = invoke(["audit", REPO, "--revision", "v1", *SMALL, "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert Report.load(tmp_path / "o" / "maxact_report.json").model.revision == v1
    assert "notes.txt" not in hub.requested_files(REPO)


@pytest.mark.parametrize("repo, revision, needles", [
    ("org/no-such-model", None, ["no model repo 'org/no-such-model'", "--token"]),
    (REPO, "no-such-branch", ["no revision 'no-such-branch'", REPO]),
])
def test_unknown_repo_or_revision(hub, tiny_files, tmp_path: Path, repo, revision, needles):
    hub.create_repo(REPO, tiny_files)
    args = ["audit", repo, *SMALL, "-o", str(tmp_path / "out")] + (["--revision", revision] if revision else [])
    result = invoke(args)
    assert_one_line_error(result, *needles, hub.url)
    assert result.exit_code == 2
    assert not (tmp_path / "out").exists()


def test_gated_repo_needs_a_granted_token(hub, tiny_files, tmp_path: Path):
    hub.create_repo(REPO, tiny_files, gated="manual")
    hub.add_token(READ_TOKEN, user="reader", role="read")

    result = invoke(["audit", REPO, *SMALL, "-o", str(tmp_path / "a")])
    assert_one_line_error(result, "gated", f"{hub.url}/{REPO}", "HF_TOKEN", "--token")
    assert not (tmp_path / "a").exists()

    # A token whose user has not accepted the terms is refused too, and is never printed.
    result = invoke(["audit", REPO, *SMALL, "--token", READ_TOKEN, "-o", str(tmp_path / "b")])
    assert_one_line_error(result, "gated")
    assert READ_TOKEN not in result.output

    hub.grant(REPO, "reader")
    for how, args, env in (("flag", ["--token", READ_TOKEN], None), ("env", [], {"HF_TOKEN": READ_TOKEN})):
        out = tmp_path / how
        result = invoke(["audit", REPO, *SMALL, *args, "-o", str(out)], env=env)
        assert result.exit_code == 0, result.output
        assert READ_TOKEN not in result.output
        report_bytes = (out / "maxact_report.json").read_bytes()
        assert READ_TOKEN.encode() not in report_bytes
        report = Report.load(out / "maxact_report.json")
        assert report.model.revision == hub.head(REPO) and "--token" not in report.command
    assert not hub.requested_files(REPO) & set(EXTRAS)


def test_invalid_token_is_a_one_line_error(hub, tiny_files, tmp_path: Path):
    hub.create_repo(REPO, tiny_files)
    bad = "hf_not_a_known_token_0123456789"
    result = invoke(["audit", REPO, *SMALL, "--token", bad, "-o", str(tmp_path / "o")])
    assert_one_line_error(result, "rejected the token", "invalid or expired")
    assert bad not in result.output


def test_corpus_from_a_hub_dataset_file(hub, tiny_files, tmp_path: Path):
    hub.create_repo(REPO, tiny_files)
    lines = [json.dumps({"text": " ".join(f"w{4 + (i * 7 + j) % 120}" for j in range(5 + i)), "domain": "d"})
             for i in range(6)]
    data = ("\n".join(lines) + "\n").encode()
    first = hub.create_repo("org/ds", {"data/train.jsonl": data, "data/other.jsonl": data, "README.md": b"# ds\n"},
                            repo_type="dataset")
    latest = hub.add_commit("org/ds", {"data/train.jsonl": data.replace(b'"d"', b'"e"')}, repo_type="dataset")
    spec = "hf://datasets/org/ds/data/train.jsonl"
    out = tmp_path / "out"
    result = invoke(["audit", REPO, "--corpus", spec, "--samples", "4", "--max-seq-len", "32",
                     "--no-quant-check", "--no-progress", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = Report.load(out / "maxact_report.json")
    pinned = f"hf://datasets/org/ds@{latest}/data/train.jsonl"  # the commit main pointed to
    assert report.corpus.name == pinned
    assert report.corpus.samples == 4 and report.corpus.domains == {"e": 4}
    assert hub.requested_files("org/ds", repo_type="dataset") == {"data/train.jsonl"}
    assert f"corpus {pinned}: 4 samples" in result.stdout

    result = invoke(["audit", REPO, "--corpus", f"hf://datasets/org/ds@{first}/data/train.jsonl", "--samples", "4",
                     "--max-seq-len", "32", "--no-quant-check", "--no-progress", "-o", str(tmp_path / "first")])
    assert result.exit_code == 0, result.output
    report = Report.load(tmp_path / "first" / "maxact_report.json")
    assert report.corpus.name == f"hf://datasets/org/ds@{first}/data/train.jsonl" and report.corpus.domains == {"d": 4}

    result = invoke(["audit", REPO, "--corpus", "hf://datasets/org/ds/data/missing.jsonl", *SMALL[2:],
                     "-o", str(tmp_path / "missing")])
    assert_one_line_error(result, "no file 'data/missing.jsonl'")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("fault", ["500", "close"])
def test_network_failure_is_a_one_line_message(hub, tiny_files, tmp_path: Path, fault: str):
    hub.create_repo(REPO, tiny_files)
    hub.set_fault(fault)
    result = invoke(["audit", REPO, *SMALL, "-o", str(tmp_path / "out")])
    message = assert_one_line_error(result, f"cannot reach the Hub at {hub.url} (", "HF_ENDPOINT")
    assert result.exit_code == 2
    if fault == "500":
        assert "HTTP 500" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fault", ["html", "shape"])
def test_an_endpoint_that_is_not_the_hub_is_a_one_line_message(hub, tiny_files, tmp_path: Path, fault: str):
    hub.create_repo(REPO, tiny_files)
    hub.set_fault(fault)
    result = invoke(["audit", REPO, *SMALL, "-o", str(tmp_path / "out")])
    assert_one_line_error(result, f"the server at {hub.url} answered, but not as the Hugging Face Hub does")
    assert result.exit_code == 2 and not (tmp_path / "out").exists()


def test_default_output_dir_of_a_hub_repo(hub, tiny_files, tmp_path: Path, monkeypatch):
    sha = hub.create_repo(REPO, tiny_files)
    monkeypatch.chdir(tmp_path)
    result = invoke(["audit", REPO, *SMALL])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "report: maxact-tiny-llama/maxact_report.json"
    assert Report.load(tmp_path / "maxact-tiny-llama" / "maxact_report.json").model.revision == sha
    assert [p.name for p in tmp_path.iterdir()] == ["maxact-tiny-llama"]
