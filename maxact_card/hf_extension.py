"""Register the `hf-maxact` script as an extension of the `hf` CLI, so `hf maxact audit ...` works.

`hf` (huggingface_hub 1.x and later) runs an unknown command NAME through the manifest of an
installed extension, `~/.local/share/hf/extensions/hf-NAME/manifest.json`, which names the
executable to start. `hf extensions install` writes such manifests for extensions it fetches from
GitHub; this writes the same manifest for the `hf-maxact` script of this installation, with
huggingface_hub's own manifest class, so that the format stays the one `hf` reads. It touches no
network and nothing outside that one folder.
"""

from __future__ import annotations

import datetime as _dt
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
    try:
        manifest = ext.ExtensionManifest(
            owner="local",
            repo=SCRIPT,
            repo_id=f"local/{SCRIPT}",
            short_name=SHORT_NAME,
            executable_path=str(script),
            type="binary",
            installed_at=_dt.datetime.now(_dt.timezone.utc),
            description=f"Measure max activations and publish them on the model card (maxact-card {__version__})",
        )
    except (AttributeError, TypeError):
        raise UsageError("this huggingface_hub's extension format is not one maxact-card knows; "
                         "run hf-maxact directly") from None
    folder = ext.EXTENSIONS_ROOT.expanduser() / SCRIPT
    try:
        manifest.save(folder)
    except OSError as exc:
        raise OutputError(f"cannot write {folder} ({exc.strerror}); check the permissions of that folder") from None
    return folder / ext.MANIFEST_FILENAME
