"""The wheel: templates and py.typed ship inside it, and an installed copy finds its templates."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_templates_and_an_installed_copy_renders_with_them(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel, = (tmp_path / "dist").glob("maxact_card-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in sorted(p.name for p in (ROOT / "templates").iterdir()):
        assert f"maxact_card/templates/{template}" in names, template
    assert "maxact_card/py.typed" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)

    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe = ("import maxact_card.card as c, pathlib\n"
             "print(pathlib.Path(c.__file__).parent)\n"
             "print(c.template_dir())\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    package, templates = proc.stdout.split()
    assert Path(package) == target / "maxact_card"  # the installed copy, not this checkout
    assert Path(templates) == target / "maxact_card" / "templates"
