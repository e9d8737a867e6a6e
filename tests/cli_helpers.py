"""Running the CLI in-process and checking its one-line errors."""

from __future__ import annotations

from click.testing import CliRunner

from maxact_card.cli import cli


def invoke(args: list[str], env: dict | None = None):
    """`maxact-card ARGS` in this process, with no token in the environment unless `env` sets one."""
    return CliRunner().invoke(cli, args, env={"HF_TOKEN": None, **(env or {})})


def assert_one_line_error(result, *needles: str) -> str:
    """Exit code != 0, no traceback, and exactly one `Error: ...` line, the last line on stderr."""
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
