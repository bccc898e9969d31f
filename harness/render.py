"""Rendering driver specs into a kernel family's sources with jinja2
(undefined names are errors).

What each family's rendering produces, from which templates, is one table:

    linux    <name>.c (from <template>.c.j2), Kbuild
    illumos  <name>.c (from <template>.c.j2) and <name>.conf (driver.conf);
             how it is installed in a guest (add_drv, devfsadm, rem_drv) is
             harness/illumos/steps.py's, the same for a user's own driver
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import jinja2

from .drivers import INCLUDE_DIR, DriverSpec, templates_dir
from .errors import ConfigError

TEMPLATES = "templates"   # the cache's kind for compiled templates (_Compiled)

# family -> [(template, output)], both formatted with the spec's template and name.
OUTPUTS: dict[str, list[tuple[str, str]]] = {
    "linux": [("{template}.c.j2", "{name}.c"), ("Kbuild.j2", "Kbuild")],
    "illumos": [("{template}.c.j2", "{name}.c"), ("driver.conf.j2", "{name}.conf")],
}


class _Compiled(jinja2.FileSystemBytecodeCache):
    """Compiled templates in a directory, one file per template *source*
    (jinja's own names one per template and rewrites it when the template
    changes): once written, a file never changes. Compiling the four
    drivers' templates took 10 ms of every run; loading them takes 2."""

    def get_bucket(self, environment: jinja2.Environment, name: str,
                   filename: str | None, source: str) -> jinja2.bccache.Bucket:
        checksum = self.get_source_checksum(source)
        bucket = jinja2.bccache.Bucket(
            environment, self.get_cache_key(f"{name}|{checksum}", filename), checksum)
        self.load_bytecode(bucket)
        return bucket


@functools.cache  # a template is compiled once per process, not once per driver
def _environment(family: str, compiled: Path | None) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir(family))),
                              undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False,
                              bytecode_cache=_Compiled(str(compiled)) if compiled else None)


def render(spec: DriverSpec, out_dir: Path, family: str = "linux",
           compiled: Path | None = None) -> Path:
    """Write `spec`'s sources for `family` into `out_dir/<name>`; returns that dir.
    The harness's shared user-API headers (drivers/include) go beside them.
    `compiled`: a directory that keeps compiled templates between runs."""
    if family not in spec.families():
        raise ConfigError(f"driver {spec.name} (template {spec.template}) has no {family} "
                          "template", hint=f"it exists for: {', '.join(spec.families())}")
    env = _environment(family, compiled)
    target = out_dir / spec.name
    target.mkdir(parents=True, exist_ok=True)
    names = {"template": spec.template, "name": spec.name}
    for template, output in OUTPUTS[family]:
        text = env.get_template(template.format(**names)).render(
            spec=spec, params=spec.all_params())
        (target / output.format(**names)).write_text(text)
    for header in INCLUDE_DIR.glob("*.h"):
        shutil.copyfile(header, target / header.name)
    return target
