"""Hostile but fair use: full disks, symlinked and read-only cards, an interrupt turned into another
error, a checkpoint with tensors missing, an encoder model on the Hub: one line, the right exit code,
and no byte lost or half-written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, invoke
from factories import make_report
from maxact_card import files as files_module
from maxact_card import publish
from maxact_card.errors import OutputError
from maxact_card.report import Report
from models import save_tiny

SMALL = ["--samples", "6", "--max-seq-len", "16", "--no-quant-check", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("bad") / "tiny", "llama")


def full_disk_after(monkeypatch, n: int) -> None:
    """The disk fills up after `n` files were written: the next fsync fails with ENOSPC."""
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(files_module.os, "fsync", fsync)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_write_card_on_a_full_disk_replaces_nothing(tmp_path: Path, monkeypatch):
    model = tmp_path / "m"
    model.mkdir()
    publish.write_card(make_report(scale=0.5), model)  # a card from an earlier run
    before = snapshot(model)
    for n in (0, 1, 2):  # the disk fills up at the figure, the report, or the README
        full_disk_after(monkeypatch, n)
        with pytest.raises(OutputError, match="the card goes next to the model: free some space"):
            publish.write_card(make_report(), model)
        assert snapshot(model) == before  # all three as they were, no temporary file left


def test_a_symlinked_readme_is_written_through_with_its_mode(tmp_path: Path):
    shared = tmp_path / "cards"
    shared.mkdir()
    target = shared / "card.md"
    target.write_text("---\nlicense: mit\n---\n# Model\n", encoding="utf-8")
    target.chmod(0o600)
    model = tmp_path / "m"
    model.mkdir()
    (model / "README.md").symlink_to(target)
    publish.write_card(make_report(), model)
    assert (model / "README.md").is_symlink() and os.readlink(model / "README.md") == str(target)
    assert "maxact-card:begin" in target.read_text(encoding="utf-8") and "# Model" in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in shared.iterdir()) == ["card.md"]


def test_a_read_only_model_folder_says_where_the_card_goes(tmp_path: Path, monkeypatch):
    model = tmp_path / "m"
    model.mkdir()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files_module.tempfile, "mkstemp", read_only)
    with pytest.raises(OutputError) as err:
        publish.write_card(make_report(), model)
    assert "the card goes next to the model" in str(err.value) and "--output-dir" not in str(err.value)
    assert list(model.iterdir()) == []


def test_a_full_disk_at_the_report_is_one_line_after_the_audit(tiny_dir: Path, tmp_path: Path, monkeypatch):
    full_disk_after(monkeypatch, 0)
    out = tmp_path / "out"
    result = invoke(["audit", str(tiny_dir), *SMALL, "-o", str(out)])
    assert_one_line_error(result, "cannot write", "maxact_report.json", "No space left on device")
    assert result.exit_code == 2
    assert not list(out.glob("*")) if out.exists() else True


def test_write_card_on_a_full_disk_from_the_cli(tiny_dir: Path, tmp_path: Path, monkeypatch):
    model = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, model)
    (model / "README.md").write_text("# Tiny\n", encoding="utf-8")
    before = snapshot(model)
    full_disk_after(monkeypatch, 1)  # the report in -o is written; the card's files are not
    result = invoke(["audit", str(model), *SMALL, "--write-card", "-o", str(tmp_path / "out")])
    assert_one_line_error(result, f"cannot write the card into {model}")
    assert snapshot(model) == before


def test_render_of_a_latin1_readme_is_one_line(tmp_path: Path):
    report = tmp_path / "r.json"
    make_report().save(report)
    readme = tmp_path / "README.md"
    readme.write_bytes("# Modèle\n".encode("latin-1"))
    result = invoke(["render", str(report), "--readme", str(readme), "-o", str(tmp_path / "out.md")])
    assert_one_line_error(result, "is not UTF-8 text (byte 0xe8", "convert it")
    assert not (tmp_path / "out.md").exists()


def test_an_interrupt_a_library_turns_into_its_own_error_exits_130(tiny_dir: Path, tmp_path: Path, monkeypatch):
    """Ctrl-C while transformers loads the model: the library may catch the KeyboardInterrupt and
    raise an error of its own; the audit still ends as interrupted (130), not as 'cannot load'."""
    import signal

    import transformers

    def load(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the handler raises at the next bytecode
            for _ in range(10**6):
                pass
        except KeyboardInterrupt:
            raise OSError("Unable to load weights from checkpoint file") from None

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", load)
    result = invoke(["audit", str(tiny_dir), *SMALL, "-o", str(tmp_path / "out")])
    assert_one_line_error(result, "interrupted; nothing was written")
    assert result.exit_code == 130 and not (tmp_path / "out").exists()


def test_allow_missing_weights_audits_a_checkpoint_with_a_tensor_missing(tiny_dir: Path, tmp_path: Path):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "missing"
    shutil.copytree(tiny_dir, model)
    weights = load_file(model / "model.safetensors")
    del weights["model.layers.0.self_attn.o_proj.weight"]
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    refused = invoke(["audit", str(model), *SMALL, "-o", str(tmp_path / "no")])
    assert_one_line_error(refused, "lacks 1 tensor(s)", "model.layers.0.self_attn.o_proj.weight")
    allowed = invoke(["audit", str(model), *SMALL, "--allow-missing-weights", "-o", str(tmp_path / "yes")])
    assert allowed.exit_code == 0, allowed.output
    report = Report.load(tmp_path / "yes" / "maxact_report.json")
    assert "--allow-missing-weights" in report.command


@pytest.mark.parametrize("config, needle", [
    ({"model_type": "bert", "architectures": ["BertModel"]}, "is an encoder model (bert)"),
    ({"model_type": "t5", "is_encoder_decoder": True}, "is an encoder-decoder model (t5)"),
])
def test_an_encoder_repo_on_the_hub_is_refused_before_its_weights_download(hub, tmp_path: Path, config, needle):
    repo = "org/encoder"
    hub.create_repo(repo, {"config.json": json.dumps(config).encode(), "model.safetensors": b"weights"})
    result = invoke(["audit", repo, *SMALL, "-o", str(tmp_path / "out")])
    assert_one_line_error(result, needle, "out of its scope")
    assert "model.safetensors" not in hub.requested_files(repo)


def test_a_readme_that_cannot_be_merged_is_refused_before_the_audit(tiny_dir: Path, tmp_path: Path, monkeypatch):
    import maxact_card.pipeline

    model = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, model)
    (model / "README.md").write_text("# Tiny\n\n```python\nprint('an example left open')\n", encoding="utf-8")
    before = snapshot(model)

    def audit(*args, **kwargs):
        raise AssertionError("the audit ran")

    monkeypatch.setattr(maxact_card.pipeline, "run_audit", audit)
    result = invoke(["audit", str(model), *SMALL, "--write-card", "-o", str(tmp_path / "out")])
    assert_one_line_error(result, "README")
    assert snapshot(model) == before and not (tmp_path / "out").exists()


def test_a_hub_card_that_cannot_be_merged_is_refused_before_the_audit(hub, tiny_dir: Path, tmp_path: Path,
                                                                      monkeypatch):
    import maxact_card.pipeline
    from hubserver import read_dir

    hub.add_token("hf_w", "alice", role="write")
    files = read_dir(tiny_dir)
    files["README.md"] = b"---  \nlicense: mit\n---\n# Tiny\n"  # blanks after the opening '---'
    hub.create_repo("alice/tiny", files)

    def audit(*args, **kwargs):
        raise AssertionError("the audit ran")

    monkeypatch.setattr(maxact_card.pipeline, "run_audit", audit)
    result = invoke(["audit", "alice/tiny", *SMALL, "--open-pr", "--token", "hf_w", "-o", str(tmp_path / "out")])
    assert_one_line_error(result, "'---'")
    assert hub.pull_requests("alice/tiny") == [] and "model.safetensors" not in hub.requested_files("alice/tiny")
