"""The `maxact-card audit` command line that reproduces a measurement, as the report and the card give it."""

from __future__ import annotations

import shlex
from typing import Optional

import click


# Options that publish or authenticate: not part of how the measurement is reproduced.
_NOT_IN_COMMAND = {"token", "open_pr", "write_card", "dry_run", "force", "progress", "output_dir", "fail_above",
                   "models_file", "baseline", "fail_on_regression", "template", "model_name"}


def reproduce_command(ctx: click.Context, model: str, revision: Optional[str] = None) -> str:
    """`maxact-card audit MODEL` with the options given on the command line (never the token, never a
    path of this machine: a local checkpoint by its name, a corpus file by its file name);
    `revision`: the one a --models line gives."""
    from .loading import local_name, looks_local
    from .pipeline import corpus_arg

    if looks_local(model):
        model = local_name(model, ctx.params.get("model_name"))[0]
    parts = ["maxact-card", "audit", model] + (["--revision", revision] if revision else [])
    for param in ctx.command.params:
        name = param.name
        if not isinstance(param, click.Option) or name in _NOT_IN_COMMAND:
            continue
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[name]
        if name == "corpus":
            value = corpus_arg(value)
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
