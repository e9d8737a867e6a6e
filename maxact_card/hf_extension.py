"""Register the `hf-maxact` script as an extension of the `hf` CLI, so `hf maxact audit ...` works.

`hf` (huggingface_hub 1.x and later) runs an unknown command NAME through the manifest of an
installed extension, `~/.local/share/hf/extensions/hf-NAME/manifest.json`, which names the
executable to start. `hf extensions install` writes such manifests for extensions it fetches from
GitHub; this writes the same manifest for the `hf-maxact` script of this installation, with
huggingface_hub's own manifest class, so that the format stays the one `hf` reads. It touches no
network and nothing outside that one folder.

On POSIX systems the manifest names a small launcher in that folder, which runs the script, or,
when the script is gone (its environment was removed or moved), says how to reinstall: `hf` itself
would only say "No such command".
"""

from __future__ import annotations

import datetime as _dt
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Optional

from . import __version__
from .errors import OutputError, UsageError

SHORT_NAME = "maxact"
SCRIPT = "hf-" + SHORT_NAME


def find_script() -> Path:
    """The `hf-maxact` script of this installation (next to this Python, else on PATH)."""
    here = Path(sys.executable).parent / SCRIPT
    if here.is_file():
        return here
    found = shutil.which(SCRIPT)
    if found is None:
        raise UsageError(f"cannot find the {SCRIPT} script of this installation; reinstall maxact-card "
                         "(pip install maxact-card) and run this again from its environment")
    return Path(found)


def install(script: Optional[Path] = None) -> Path:
    """Write the manifest that makes `hf maxact ...` run `script`; returns the manifest's path."""
    try:
        from huggingface_hub.cli import extensions as ext
    except ImportError:
        raise UsageError("this huggingface_hub has no `hf` CLI extensions; upgrade it "
                         "(pip install -U huggingface_hub) or run hf-maxact directly") from None
    script = (script or find_script()).resolve()
    folder = ext.EXTENSIONS_ROOT.expanduser() / SCRIPT
    executable = script
    if os.name != "nt":
        executable = folder / "launcher.sh"
    try:
        manifest = ext.ExtensionManifest(
            owner="local",
            repo=SCRIPT,
            repo_id=f"local/{SCRIPT}",
            short_name=SHORT_NAME,
            executable_path=str(executable),
            type="binary",
            installed_at=_dt.datetime.now(_dt.timezone.utc),
            description=f"Measure max activations and publish them on the model card (maxact-card {__version__})",
        )
    except (AttributeError, TypeError):
        raise UsageError("this huggingface_hub's extension format is not one maxact-card knows; "
                         "run hf-maxact directly") from None
    try:
        manifest.save(folder)
        if executable != script:
            executable.write_text(_launcher(script), encoding="utf-8")
            executable.chmod(0o755)
    except OSError as exc:
        raise OutputError(f"cannot write {folder} ({exc.strerror}); check the permissions of that folder") from None
    return folder / ext.MANIFEST_FILENAME


def _launcher(script: Path) -> str:
    """A POSIX shell launcher for `script` that says how to reinstall when the script is gone."""
    target = shlex.quote(str(script))
    message = (f"Error: hf maxact: {script} is gone (the environment maxact-card was installed in was removed or "
               "moved); install maxact-card again (pip install maxact-card) and run `maxact-card "
               "install-hf-extension` from that environment, or remove this extension with `hf extensions remove "
               "maxact`")
    return (f"#!/bin/sh\n# Written by maxact-card install-hf-extension: runs {SCRIPT} of that installation.\n"
            f"if [ -x {target} ]; then exec {target} \"$@\"; fi\n"
            f"echo {shlex.quote(message)} >&2\nexit 2\n")
