"""The `maxact-card` command line. Heavy imports live inside the commands so --help is instant.

Every `MaxActCardError` becomes one line on stderr and a non-zero exit code;
MAXACT_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import click

from . import __version__
from .errors import MaxActCardError, ThresholdExceeded, UsageError
from .reproduce import reproduce_command

AUDIT_EXAMPLES = """
\b
Examples:
  maxact-card audit Qwen/Qwen3-0.6B
  maxact-card audit ./my-checkpoint --samples 256 --write-card
  maxact-card audit ./SmolLM2-135M-Instruct.Q4_1.gguf --samples 32 --max-seq-len 128
  maxact-card audit google/gemma-3-27b-it --open-pr --dry-run
  maxact-card audit my-org/my-model --baseline previous --fail-on-regression 1.2
  maxact-card audit --models models.txt -o runs/
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
      maxact-card compare maxact-model-a maxact-model-b --plot compare.png
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
@click.argument("model", required=False)
@click.option("--models", "models_file", type=click.Path(dir_okay=False),
              help="Audit every model listed in this file (MODEL [REVISION] per line), each into its own folder under "
              "--output-dir; resumes, keeps going past failures, ends with the compare table.")
@click.option("--revision", help="Branch, tag or commit of a Hub repo (resolved to a commit sha).")
@click.option("--token", help="Hugging Face token (default: HF_TOKEN, then the cached login). Never printed.")
@click.option("--dtype", type=click.Choice(["auto", "bfloat16", "float16", "float32"]), default="auto", show_default=True,
              help="Compute dtype; auto = the checkpoint's (float32 for GGUF).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--device-map", type=click.Choice(["auto"]), help="Shard the model across devices with accelerate.")
@click.option("--model-name", help="The name of a local checkpoint in the report, the card and the command, e.g. "
              "my-org/my-model (default: config.json's _name_or_path, else the folder or file name; never its path).")
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
              "(default: ./maxact-<model name>; with --models, the folder that holds one such folder per model).")
@click.option("--quant-check/--no-quant-check", default=True, show_default=True, help="Run the INT8/FP8 check.")
@click.option("--calib-samples", default="auto", show_default=True, callback=_calib_samples,
              help="Samples that calibrate static scales; the rest evaluate. auto = 128, or half of --samples "
              "when there are fewer than 256.")
@click.option("--formats", callback=_formats, help="Formats the end-to-end check runs, comma-separated "
              "[default: int8_absmax,int8_per_token,fp8_e4m3,fp8_e4m3_per_token,nvfp4,mxfp4_e2m1]; per-site "
              "errors cover every format.")
@click.option("--clip-percentiles", default="99.9,99.99", show_default=True, callback=_percentiles,
              help="Percentile clipping policies for static INT8 scales.")
@click.option("--baseline", metavar="REF", help="Show what changed against REF: previous (the report on the "
              "model's current card), base-model (on its base_model's card), a report file or folder, or a Hub repo.")
@click.option("--fail-on-regression", type=float, metavar="RATIO", help="With --baseline: exit with code 3 when M "
              "grew more than RATIO times (e.g. 1.2) or a verdict got worse.")
@click.option("--fail-above", type=float, help="Exit with code 3 when M exceeds this value.")
@click.option("--write-card", is_flag=True, help="Update README.md of the local checkpoint directory.")
@click.option("--open-pr", is_flag=True, help="Open (or update) a pull request with the card on the Hub repo.")
@click.option("--dry-run", is_flag=True, help="With --open-pr: print the README diff and the files, touch nothing.")
@click.option("--force", is_flag=True, help="With --open-pr: commit even if the card already has this report.")
@click.option("--template", type=click.Path(dir_okay=False, exists=True), help="Your own Jinja2 card-section template.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar on stderr.")
@handle_errors
def audit(model: Optional[str], models_file: Optional[str], **kw: Any) -> None:
    """Measure the activation range of MODEL: a Hub repo id, a local checkpoint directory or a .gguf file.

    Writes <output-dir>/maxact_report.json and prints a summary.
    """
    if (model is None) == (models_file is None):
        raise UsageError("give one MODEL to audit, or --models FILE with one model per line (not both)")
    fail_above, ratio = kw["fail_above"], kw["fail_on_regression"]
    if fail_above is not None and fail_above != fail_above:
        raise UsageError("--fail-above must be a number, got nan; give the largest M you accept, e.g. 65504")
    if ratio is not None and not kw["baseline"]:
        raise UsageError("--fail-on-regression compares with a baseline; add --baseline previous (or base-model, a "
                         "report, a Hub repo)")
    if ratio is not None and not 1.0 <= ratio < float("inf"):
        raise UsageError(f"--fail-on-regression takes the largest growth of M you accept, new M / baseline M >= 1 "
                         f"(e.g. 1.2 for 20%), got {ratio:g}")
    if (kw["dry_run"] or kw["force"]) and not kw["open_pr"]:
        raise UsageError("--dry-run and --force apply to --open-pr; add --open-pr")
    ctx = click.get_current_context()
    if models_file is not None:
        if kw["revision"]:
            raise UsageError("--revision applies to one model; with --models write the revision after the model on "
                             "its line")
        from .batch import read_models, run_models

        entries = read_models(Path(models_file))
        run_models(entries, kw, lambda entry, out, kept: _audit_one(ctx, entry.model, kw, out, revision=entry.revision,
                                                                    kept=kept),
                   echo=click.echo, main=_rank() == 0)
        return
    from .pipeline import default_output_dir

    out_dir = Path(kw["output_dir"] or default_output_dir(model))  # type: ignore[arg-type]
    _audit_one(ctx, model, kw, out_dir)  # type: ignore[arg-type]


def _audit_one(ctx: click.Context, model: str, kw: dict[str, Any], out_dir: Path, *, revision: Optional[str] = None,
               kept: Any = None):
    """One audit as the command line asked: checks, measurement, report, card, pull request, then
    the thresholds (ThresholdExceeded once everything is written). Returns the report.

    `kept`: a report of the same weights and settings already in `out_dir` (--models resuming): it
    stands for the measurement; its baseline is compared afresh, the card and the pull request are
    published (a no-op when they already are) and the thresholds apply to it."""
    from .options import AuditOptions
    from .pipeline import run_audit
    from .summary import summary

    kw = dict(kw)
    fail_above, ratio = kw.pop("fail_above"), kw.pop("fail_on_regression")
    write_card, open_pr, dry_run, force = (kw.pop(k) for k in ("write_card", "open_pr", "dry_run", "force"))
    template = kw.pop("template")
    kw.pop("output_dir")
    if revision is not None:
        kw["revision"] = revision
    if open_pr:
        from .loading import looks_local

        if looks_local(model):
            raise UsageError(f"{model} is a local checkpoint, so the report would have no Hub revision; audit the "
                             "Hub repo id to open a pull request, or write the card locally with --write-card")
    if write_card and not Path(model).is_dir():
        raise UsageError("--write-card needs a local checkpoint directory; for a Hub repo use --open-pr")
    _check_writable(out_dir)
    command = reproduce_command(ctx, model, revision)
    options = AuditOptions(model=model, quant_check=kw.pop("quant_check"), command=command, **kw)
    main = _rank() == 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _stop_on_sigterm()
    from .card import check_template

    check_template(Path(template) if template else None)  # every check that can fail runs before the audit
    echo = lambda s: click.echo(s, err=True)  # noqa: E731
    hub = None
    if open_pr:
        from .hub import Hub

        hub = Hub(token=options.token, progress=options.progress and main)
        # A read-only or missing token fails now, not after hours of measurement.
        user = hub.check_write(model) if not dry_run else (hub.whoami() if hub.has_token() else None)
        if kept is None and not force:
            from .publish import published_report

            kept = published_report(hub, options, user, out_dir if main else None, echo=click.echo)
            if kept is not None:
                open_pr = False  # the card, or the pull request, already carries it
    if main and (write_card or open_pr):
        from .publish import check_cards

        check_cards(model, write_card=write_card, hub=hub if open_pr else None, revision=options.revision)
    if kept is None:
        report = run_audit(options, echo=echo, strict_baseline=ratio is not None)
    else:
        from .pipeline import rebase

        report = rebase(kept, options, echo=echo, strict_baseline=ratio is not None)
    if not main:
        return report  # process 0 writes the report, the card and the pull request
    if kept is None or report != kept:
        path = report.save(out_dir / "maxact_report.json")
    if kept is None:
        click.echo(summary(report))
        click.echo(f"report: {path}")
    if write_card:
        from .publish import write_card as _write_card

        readme = _write_card(report, Path(model), template=Path(template) if template else None)
        click.echo(f"card: {readme}")
    if open_pr:
        from .publish import open_pr as _open_pr

        result = _open_pr(report, hub, model, template=Path(template) if template else None,
                          dry_run=dry_run, force=force, echo=click.echo)
        if result.url:
            click.echo(f"pull request: {result.url}")
    if fail_above is not None and report.peak is not None and report.peak.abs > fail_above:
        p = report.peak
        what = f"M is not finite ({p.nonfinite} NaN/Inf activations, the first" if p.nonfinite else f"M = {p.abs:.6g}"
        raise ThresholdExceeded(f"{what} at {p.site}{')' if p.nonfinite else ''} exceeds --fail-above {fail_above:g}")
    if ratio is not None and report.baseline is not None:
        from .comparison import regressions

        if report.baseline.differences:
            raise UsageError(f"the baseline ({report.baseline.source}) was measured otherwise: "
                             f"{'; '.join(report.baseline.differences)}; no regression check was made (the report is "
                             "written): audit with the baseline's settings")
        found = regressions(report.baseline, ratio)
        if found:
            raise ThresholdExceeded(f"regression against {report.baseline.source}: {'; '.join(found)}")
    return report


def _check_writable(out_dir: Path, option: str = "--output-dir") -> None:
    """Fail before the long work if the report cannot be written."""
    probe_dir = out_dir
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir() or not os.access(probe_dir, os.W_OK):
        raise UsageError(f"cannot write to {out_dir}: {probe_dir} is not a writable directory; pass another {option}")


@cli.command()
@click.argument("model")
@click.option("--revision", help="Branch, tag or commit of a Hub repo.")
@click.option("--token", help="Hugging Face token for private or gated repos (default: HF_TOKEN, then the cached login).")
@click.option("--all", "show_all", is_flag=True, help="Every site, not one line per site kind.")
@handle_errors
def sites(model: str, revision: Optional[str], token: Optional[str], show_all: bool) -> None:
    """The probe sites of MODEL (a Hub repo, a local directory or a .gguf file) and which count towards
    M, from its config alone: the model is built on the meta device, no weights are downloaded."""
    from .site_list import describe

    click.echo(describe(model, revision=revision, token=token, show_all=show_all))


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


COMPARE_EXAMPLES = """
\b
Examples:
  maxact-card compare maxact-SmolLM2-135M-Instruct maxact-gemma-3-270m
  maxact-card compare Qwen/Qwen3-0.6B Qwen/Qwen3-1.7B@v1.0 --format markdown -o table.md
  maxact-card compare runs/*/maxact_report.json --format csv -o table.csv --plot compare.png
"""


@cli.command(epilog=COMPARE_EXAMPLES)
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv", "json"]), default="text",
              show_default=True, help="Table format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the table to this file (default: stdout).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG: M per model and the residual stream per "
              "layer of every model.")
@click.option("--token", help="Hugging Face token for private or gated repos (default: HF_TOKEN, then the cached login).")
@handle_errors
def compare(sources: tuple[str, ...], fmt: str, output: Optional[str], plot: Optional[str], token: Optional[str]) -> None:
    """Compare saved reports side by side: M, where it is, fp16 headroom and verdicts per model.

    SOURCE is a maxact_report.json, a folder holding one (an audit's output folder), or a Hub repo
    (owner/name[@revision]) whose card carries a maxact-card report. The first SOURCE is the
    reference: rows measured otherwise (corpus, samples, sequence length, seed, dtype, calibration)
    are marked not comparable, naming the difference.
    """
    from .compare import note, render, rows
    from .files import write_all
    from .sources import load

    for target, opt in ((output, "-o/--output"), (plot, "--plot")):
        if target:
            _check_writable(Path(target).parent if str(Path(target).parent) else Path("."), opt)
    from .hub import lazy_hub

    hub = lazy_hub(token, progress=False)
    loaded = [load(spec, hub) for spec in sources]
    table = rows([(item.report, item.label) for item in loaded])
    text = render(table, fmt)
    files: dict[Path, bytes] = {}
    if output:
        files[Path(output)] = text.encode("utf-8")
    if plot:
        from .plot import render_compare_png

        labels = [f"{r.model}@{r.revision[:7]}" if r.revision != "-" else r.model for r in table]
        files[Path(plot)] = render_compare_png([r.report for r in table], labels)
    if files:  # the table and the figure together, or neither
        write_all(files, lambda path, reason: f"cannot write {path} ({reason}); pass another -o/--output or --plot")
    if not output:
        click.echo(text, nl=False)
    if note(table) and fmt in ("text", "markdown"):
        click.echo(note(table), err=True)
    for target, what in ((output, "table"), (plot, "figure")):
        if target:
            click.echo(f"{what}: {target}", err=True)


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


def hf_main() -> None:
    """The hf-maxact script, which `hf maxact ...` runs: the same program, its usage and examples
    written as `hf maxact`."""
    for command in [cli, *cli.commands.values()]:
        command.help, command.epilog = (t and t.replace("maxact-card ", "hf maxact ") for t in (command.help, command.epilog))
    cli(prog_name="hf maxact")
