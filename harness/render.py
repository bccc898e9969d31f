"""Rendering driver specs into C and Kbuild with jinja2 (undefined names are errors)."""

from __future__ import annotations

import shutil
from pathlib import Path

import jinja2

from .drivers import INCLUDE_DIR, TEMPLATES_DIR, DriverSpec


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
                              undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False)


def render(spec: DriverSpec, out_dir: Path) -> Path:
    """Write `<name>.c` and `Kbuild` for `spec` into `out_dir/<name>`; returns that dir."""
    env = _environment()
    target = out_dir / spec.name
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{spec.name}.c").write_text(
        env.get_template(f"{spec.template}.c.j2").render(spec=spec, params=spec.all_params()))
    (target / "Kbuild").write_text(env.get_template("Kbuild.j2").render(spec=spec))
    for header in INCLUDE_DIR.glob("*.h"):
        shutil.copyfile(header, target / header.name)
    return target
