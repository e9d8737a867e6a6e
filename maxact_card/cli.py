"""The `maxact-card` command line. Heavy imports live inside the commands so --help is instant.

Every `MaxActCardError` becomes one line on stderr and a non-zero exit code;
MAXACT_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import click

from . import __version__
from .errors import MaxActCardError, ThresholdExceeded, UsageError

AUDIT_EXAMPLES = """
\b
Examples:
  maxact-card audit Qwen/Qwen3-0.6B
  maxact-card audit ./my-checkpoint --samples 256 --write-card
  maxact-card audit ./SmolLM2-135M-Instruct.Q4_1.gguf --samples 32 --max-seq-len 128
  maxact-card audit google/gemma-3-27b-it --open-pr --dry-run
"""

RENDER_EXAMPLES = """
\b
Examples:
  maxact-card render maxact_report.json --readme README.md -o README.md
  maxact-card render maxact_report.json -o card.md --template my_section.md.j2
"""


def _rank() -> int:
    """This process's rank in a data-parallel run (torchrun / accelerate launch); 0 otherwise."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def _fail(message: str, code: int) -> None:
    if _rank() == 0:  # the other processes of a data-parallel run fail with the same cause, silently
        click.echo(f"Error: {message}", err=True)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the launcher's stop, while this one exits anyway
        # A process group that failed mid-run still has its transport threads; the interpreter's teardown
        # would abort on them ("terminate called ..."), so the process ends here, its output flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _stop_on_sigterm() -> None:
    """Under torchrun, a process that fails makes the launcher stop the others with SIGTERM: end with
    one line (nothing has been written; every output is written at the end, atomically)."""
    import signal

    from .errors import DistributedError

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the exit that follows is not interrupted
        raise DistributedError("stopped by the launcher: another process of the data-parallel run failed "
                               "(see its log) or the run was interrupted; nothing was written")

    signal.signal(signal.SIGTERM, stop)


class _Interrupts:
    """Ctrl-C while a command runs. Some libraries turn the KeyboardInterrupt into an error of
    their own (a model that 'cannot load'): the flag tells the two apart."""

    seen = False

    @classmethod
    def catch(cls, signum: int, frame: Any) -> None:
        cls.seen = True
        raise KeyboardInterrupt


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import signal
        import threading

        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, _Interrupts.catch) if main_thread else None
        _Interrupts.seen = False
        debug = os.environ.get("MAXACT_DEBUG") == "1"
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            if debug:
                raise
            _fail("interrupted; nothing was written", 130)
        except Exception as exc:
            if _Interrupts.seen and not debug:
                _fail("interrupted; nothing was written", 130)
            if not isinstance(exc, MaxActCardError) or debug:
                raise
            _fail(str(exc), exc.exit_code)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="maxact-card")
def cli() -> None:
    """Measure how large an LLM's activations get (M = max|a|), check INT8/FP8/FP16 headroom,
    and publish the result on the model's Hugging Face card.

    \b
    Examples:
      maxact-card audit ./model.gguf --samples 64
      maxact-card audit google/gemma-3-27b-it --open-pr
      maxact-card render maxact_report.json --readme README.md -o README.md
    """


def _percentiles(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("give comma-separated numbers, e.g. 99.9,99.99") from None


def _calib_samples(ctx: click.Context, param: click.Parameter, value: str) -> Optional[int]:
    if value.strip().lower() == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"give 'auto' or a whole number of samples, not {value!r}") from None


def _formats(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise click.BadParameter("give comma-separated format names, e.g. int8_per_token,nvfp4")
    return names


@cli.command(epilog=AUDIT_EXAMPLES)
@click.argument("model")
@click.option("--revision", help="Branch, tag or commit of a Hub repo (resolved to a commit sha).")
@click.option("--token", help="Hugging Face token (default: HF_TOKEN, then the cached login). Never printed.")
@click.option("--dtype", type=click.Choice(["auto", "bfloat16", "float16", "float32"]), default="auto", show_default=True,
              help="Compute dtype; auto = the checkpoint's (float32 for GGUF).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--device-map", type=click.Choice(["auto"]), help="Shard the model across devices with accelerate.")
@click.option("--trust-remote-code", is_flag=True, help="Run the repo's own modelling code (off by default).")
@click.option("--allow-missing-weights", is_flag=True,
              help="Audit a checkpoint that lacks tensors the model needs (they are random) or holds others.")
@click.option("--corpus", default="builtin", show_default=True,
              help="builtin, a .jsonl/.txt file, or hf://datasets/OWNER/NAME[@REVISION]/path.")
@click.option("--samples", type=int, default=256, show_default=True, help="Number of corpus samples.")
@click.option("--max-seq-len", type=int, default=512, show_default=True, help="Tokens per sample at most.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the stratified sampling.")
@click.option("--batch-size", default="auto", show_default=True,
              help="Samples per forward pass; auto estimates from memory and halves on out-of-memory.")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), help="Where maxact_report.json goes "
              "(default: ./maxact-<model name>).")
@click.option("--quant-check/--no-quant-check", default=True, show_default=True, help="Run the INT8/FP8 check.")
@click.option("--calib-samples", default="auto", show_default=True, callback=_calib_samples,
              help="Samples that calibrate static scales; the rest evaluate. auto = 128, or half of --samples "
              "when there are fewer than 256.")
@click.option("--formats", callback=_formats, help="Formats the end-to-end check runs, comma-separated "
              "[default: int8_absmax,int8_per_token,fp8_e4m3,fp8_e4m3_per_token,nvfp4,mxfp4_e2m1]; per-site "
              "errors cover every format.")
@click.option("--clip-percentiles", default="99.9,99.99", show_default=True, callback=_percentiles,
              help="Percentile clipping policies for static INT8 scales.")
@click.option("--fail-above", type=float, help="Exit with code 3 when M exceeds this value.")
@click.option("--write-card", is_flag=True, help="Update README.md of the local checkpoint directory.")
@click.option("--open-pr", is_flag=True, help="Open (or update) a pull request with the card on the Hub repo.")
@click.option("--dry-run", is_flag=True, help="With --open-pr: print the README diff and the files, touch nothing.")
@click.option("--force", is_flag=True, help="With --open-pr: commit even if the card already has this report.")
@click.option("--template", type=click.Path(dir_okay=False, exists=True), help="Your own Jinja2 card-section template.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar on stderr.")
@handle_errors
def audit(model: str, **kw: Any) -> None:
    """Measure the activation range of MODEL: a Hub repo id, a local checkpoint directory or a .gguf file.

    Writes <output-dir>/maxact_report.json and prints a summary.
    """
    from .pipeline import default_output_dir, run_audit
    from .options import AuditOptions
    from .summary import summary

    fail_above: Optional[float] = kw.pop("fail_above")
    write_card, open_pr, dry_run, force = (kw.pop(k) for k in ("write_card", "open_pr", "dry_run", "force"))
    template = kw.pop("template")
    if fail_above is not None and fail_above != fail_above:
        raise UsageError("--fail-above must be a number, got nan; give the largest M you accept, e.g. 65504")
    if (dry_run or force) and not open_pr:
        raise UsageError("--dry-run and --force apply to --open-pr; add --open-pr")
    if open_pr:
        from .loading import looks_local

        if looks_local(model):
            raise UsageError(f"{model} is a local checkpoint, so the report would have no Hub revision; audit the "
                             "Hub repo id to open a pull request, or write the card locally with --write-card")
    if write_card and not Path(model).is_dir():
        raise UsageError("--write-card needs a local checkpoint directory; for a Hub repo use --open-pr")
    out_dir = Path(kw.pop("output_dir") or default_output_dir(model))
    _check_writable(out_dir)
    command = _reproduce_command(click.get_current_context(), model)
    options = AuditOptions(model=model, quant_check=kw.pop("quant_check"), command=command, **kw)
    main = _rank() == 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _stop_on_sigterm()
    hub = None
    if open_pr and main:
        from .hub import Hub

        hub = Hub(token=options.token, progress=options.progress)
        if not dry_run:
            hub.whoami()  # no or bad token: fail now, not after the measurement
    if main and (write_card or hub is not None):
        from .publish import check_cards

        check_cards(model, write_card=write_card, hub=hub, revision=options.revision)  # before hours of work
    report = run_audit(options, echo=lambda s: click.echo(s, err=True))
    if not main:
        return  # process 0 writes the report, the card and the pull request
    path = report.save(out_dir / "maxact_report.json")
    click.echo(summary(report))
    click.echo(f"report: {path}")
    if write_card:
        from .publish import write_card as _write_card

        readme = _write_card(report, Path(model), template=Path(template) if template else None)
        click.echo(f"card: {readme}")
    if hub is not None:
        from .publish import open_pr as _open_pr

        result = _open_pr(report, hub, model, template=Path(template) if template else None,
                          dry_run=dry_run, force=force, echo=click.echo)
        if result.url:
            click.echo(f"pull request: {result.url}")
    if fail_above is not None and report.peak is not None and report.peak.abs > fail_above:
        p = report.peak
        what = f"M is not finite ({p.nonfinite} NaN/Inf activations, the first" if p.nonfinite else f"M = {p.abs:.6g}"
        raise ThresholdExceeded(f"{what} at {p.site}{')' if p.nonfinite else ''} exceeds --fail-above {fail_above:g}")


# Options that publish or authenticate: not part of how the measurement is reproduced.
_NOT_IN_COMMAND = {"token", "open_pr", "write_card", "dry_run", "force", "progress", "output_dir", "fail_above"}


def _reproduce_command(ctx: click.Context, model: str) -> str:
    """`maxact-card audit MODEL` with the options given on the command line (never the token)."""
    parts = ["maxact-card", "audit", model]
    for param in ctx.command.params:
        name = param.name
        if not isinstance(param, click.Option) or name in _NOT_IN_COMMAND:
            continue
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[name]
        if value is None and not param.is_flag:  # an explicit `auto` (--calib-samples auto)
            parts += [param.opts[-1], "auto"]
            continue
        if param.is_flag:
            flag = next((o for o in (param.opts if value else param.secondary_opts)), None)
            if flag:
                parts.append(flag)
        else:
            text = ",".join(v if isinstance(v, str) else f"{v:g}" for v in value) if isinstance(value, tuple) else str(value)
            parts += [param.opts[-1], text]
    return " ".join(shlex.quote(p) for p in parts)


def _check_writable(out_dir: Path) -> None:
    """Fail before the long work if the report cannot be written."""
    probe_dir = out_dir
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir() or not os.access(probe_dir, os.W_OK):
        raise UsageError(f"cannot write to {out_dir}: {probe_dir} is not a writable directory; pass another --output-dir")


@cli.command(epilog=RENDER_EXAMPLES)
@click.argument("report_path", metavar="REPORT", type=click.Path(dir_okay=False))
@click.option("--readme", type=click.Path(dir_okay=False), help="An existing README.md to merge the section into.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where to write the card (default: stdout).")
@click.option("--template", type=click.Path(dir_okay=False, exists=True), help="Your own Jinja2 card-section template.")
@handle_errors
def render(report_path: str, readme: Optional[str], output: Optional[str], template: Optional[str]) -> None:
    """Render the Activation Range section of a saved REPORT (maxact_report.json) into a model card."""
    from .publish import render_readme
    from .files import write_atomic
    from .report import Report

    report = Report.load(report_path)
    text = None
    if readme:
        p = Path(readme)
        if not p.is_file():
            raise UsageError(f"no README at {readme}; drop --readme to render a new card")
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{readme} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                             f"{exc.start}); the Hub reads model cards as UTF-8: convert it and run again") from None
    card = render_readme(report, text, template=Path(template) if template else None)
    if output:
        write_atomic(Path(output), card.encode("utf-8"),
                     lambda path, reason: f"cannot write {path} ({reason}); pass another -o/--output")
        click.echo(f"card: {output}", err=True)
    else:
        click.echo(card, nl=False)


@cli.command("install-hf-extension", epilog="""
\b
Examples:
  maxact-card install-hf-extension
""")
@handle_errors
def install_hf_extension() -> None:
    """Register hf-maxact with the `hf` CLI, so that `hf maxact audit ...` runs maxact-card.

    Then `hf maxact audit ./my-checkpoint` works like `maxact-card audit ./my-checkpoint`.
    Writes ~/.local/share/hf/extensions/hf-maxact/manifest.json; `hf extensions remove maxact`
    undoes it.
    """
    from .hf_extension import install

    path = install()
    click.echo(f"registered: `hf maxact ...` now runs maxact-card ({path})")


def main() -> None:
    cli()
