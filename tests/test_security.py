"""Security properties: loopback-only forwarding, pinned keys kept private,
no shell between our parts, nothing injected through specs or definitions."""

from __future__ import annotations

import http.server
import re
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from harness import drivers
from harness.errors import ConfigError

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def test_no_shell_true_anywhere():
    offenders = [f"{p.relative_to(HARNESS)}:{n}" for p in HARNESS.rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"shell\s*=\s*True", line)]
    assert offenders == []


def test_private_keys_are_0600_and_the_cache_is_private(guest_image, mmap_cache_dir: Path):
    image = guest_image("debian-bookworm")
    root = image.root
    for key in (image.client_key, root.client_key, root.tree / "etc/ssh/ssh_host_ed25519_key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    kinds = [d for d in mmap_cache_dir.iterdir() if d.is_dir()]
    assert {"roots", "images"} <= {d.name for d in kinds}
    for d in [mmap_cache_dir, *kinds, root.dir, image.dir, image.client_key.parent]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    boot_files = [f for f in image.dir.rglob("*") if f.is_file() and f != image.client_key]
    assert {image.kernel, image.initrd, image.host_key_pub} <= set(boot_files)
    for f in boot_files:  # never written, readable by no one else
        assert stat.S_IMODE(f.stat().st_mode) == 0o400, f


@pytest.mark.integration
def test_forwarded_ports_listen_on_loopback_only(boot_guest):
    with boot_guest("debian-bookworm") as guest:
        pid = guest.machine._child.pid
        listening = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True,
                                   check=True).stdout
        ours = [line for line in listening.splitlines() if f"pid={pid}," in line]
        assert ours, listening
        for line in ours:
            local = line.split()[3]
            assert local.startswith("127.0.0.1:"), line


@pytest.mark.parametrize("change, words", [
    ({"name": "x; rm -rf /"}, "not a short lower-case C identifier"),
    ({"name": "x\n#include"}, "not a short lower-case C identifier"),
    ({"description": "a\\\"; system(\\\"id"}, "description must be"),
    ({"description": "x */ evil(); /*"}, "description must be"),
    ({"template": "../../etc/passwd"}, "unknown template"),
    ({"workloads": ["../../../bin/sh"]}, "no workload"),
    ({"params": {"max_buffers": 100000}}, "must be 1..256"),
])
def test_specs_cannot_inject_or_escape(change, words, tmp_path: Path):
    base = {"name": "ok", "template": "dmabuf", "description": "fine", "order": 0,
            "workloads": ["pattern"]}
    toml = "\n".join(_toml(k, v) for k, v in {**base, **change}.items())
    path = tmp_path / "spec.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(words)):
        drivers.load_spec(path)


def _toml(key: str, value) -> str:
    if isinstance(value, dict):
        return f"[{key}]\n" + "\n".join(f"{k} = {v}" for k, v in value.items())
    if isinstance(value, list):
        return f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, int):
        return f"{key} = {value}"
    return f"{key} = {value!r}".replace("'", '"') if '"' not in value else \
        f"{key} = '{value}'"


@pytest.mark.integration
def test_guest_cannot_reach_the_hosts_loopback_services(boot_guest):
    """A web server listening on the host's 127.0.0.1 only is out of the
    guest's reach through QEMU's gateway 10.0.2.2 (user networking is
    restricted); without the restriction the guest fetches the page."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"host-only\n")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with boot_guest("debian-bookworm") as guest:
            # The gateway itself answers: the path out is up, so a refusal is the rule.
            assert guest.ssh.run(["ping", "-c", "1", "-W", "5", "10.0.2.2"], timeout=30).ok
            url = f"http://10.0.2.2:{server.server_address[1]}/from-guest"
            fetch = guest.ssh.run(["timeout", "20", "wget", "-O", "-", url], timeout=60)
            assert fetch.exit_status == 1 and "host-only" not in fetch.stdout, fetch
            assert "Connection refused" in fetch.stderr, fetch
    finally:
        server.shutdown()
    assert requests == []
