"""Shell commands that make an illumos guest reachable by the harness: the
harness's client key for root, the pinned host key, sshd accepting root by
key only, a DHCP address, sshd restarted. Pure functions returning text;
the NoCloud seed (seed.py) runs some of them from cloud-init's runcmd, the
serial-console fallback (console_login.py) types them.

Each command stays within 200 characters (with the exit-status echo the
console automation adds, under 230): a serial console's line discipline
holds at most 256 (MAX_CANON) in canonical mode, and longer lines are cut.
Values that go into a command are checked to be quote-free first.
"""

from __future__ import annotations

import re

from ..errors import InfraError

SSHD_CONFIG = "/etc/ssh/sshd_config"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
SSH_SERVICE = "svc:/network/ssh:default"
ROOT_SSH_DIR = "/root/.ssh"          # root's home on OmniOS is /root
MAX_COMMAND = 200
# What a key line or a PEM line may hold: base64, the key type, a comment.
_SAFE = re.compile(r"^[A-Za-z0-9+/=@._ -]*$")
# Printed on the console by the seed's runcmd; console_login.py waits for them.
READY_WORD = "mmap-harness-ready"
FAILED_WORD = "mmap-harness-seed-failed"


def _quoted(text: str) -> str:
    if not _SAFE.match(text):
        raise InfraError(f"refusing to type {text[:40]!r}... into the guest: it holds "
                         "characters a key never has")
    return f"'{text}'"


def permit_root_key_login(config: str = SSHD_CONFIG) -> str:
    """sshd_config with `PermitRootLogin without-password` first: sshd takes
    the first value of each keyword, keywords in any case (sshd_config(5)),
    and a line before any Match block applies everywhere. Rewritten in place
    (mode and owner kept). OmniOS cloud images already say so (kayak
    img_permit_rootlogin); images made otherwise may not."""
    directory, name = config.rsplit("/", 1)
    return (f"cd {directory} && {{ echo 'PermitRootLogin without-password'; grep -vi "
            f"'^[[:blank:]]*PermitRootLogin' {name}; }} > {name}.new && "
            f"cat {name}.new > {name} && rm {name}.new")


def restart_sshd() -> str:
    """Restart sshd and return only once it is online again, so no client
    ever meets the old sshd and its old host key: `svcadm restart` returns
    at once, `-s` waits (svcadm(8))."""
    return f"svcadm disable -st {SSH_SERVICE} && svcadm enable -s {SSH_SERVICE}"


def print_host_key() -> str:
    """The fingerprint sshd now shows, on the console, for the log."""
    return f"ssh-keygen -l -f {HOST_KEY}.pub > /dev/console 2>&1"


def _say(word: str, instance_id: str) -> str:
    """An echo to the console of "WORD ID" whose own text does not contain
    "WORD ID" (the word is split by quotes), so a log that shows the command
    can never pass for its output."""
    _quoted(instance_id)
    head, tail = word[:-3], word[-3:]
    return f"echo '{head}''{tail}' '{instance_id}' > /dev/console"


def seed_runcmd(instance_id: str) -> str:
    """The seed's one runcmd line: after cloud-init wrote the keys, make sshd
    take them and tell the console whether it worked."""
    return (f"{permit_root_key_login()} && {restart_sshd()} && {{ {print_host_key()}; "
            f"{_say(READY_WORD, instance_id)}; }} || {_say(FAILED_WORD, instance_id)}")


def install_keys(client_public: str, host_private: str, host_public: str,
                 ssh_dir: str = ROOT_SSH_DIR, host_key: str = HOST_KEY) -> list[str]:
    """Commands that install the harness's key for root (directory 0700,
    file 0600) and the pinned host key, a line at a time."""
    authorized, new = f"{ssh_dir}/authorized_keys", f"{host_key}.mmh"
    cmds = ["umask 077", f"mkdir -p {ssh_dir}", f"chmod 700 {ssh_dir}",
            f"printf '%s\\n' {_quoted(client_public)} > {authorized}",
            f"chmod 600 {authorized}", f": > {new}"]
    cmds += [f"printf '%s\\n' {_quoted(line)} >> {new}"
             for line in host_private.strip().splitlines()]
    cmds += [f"chmod 600 {new}", f"mv {new} {host_key}",
             f"printf '%s\\n' {_quoted(host_public)} > {host_key}.pub",
             f"chmod 644 {host_key}.pub"]
    return cmds


def ensure_dhcp() -> str:
    """A DHCP address on the first physical link unless some interface other
    than loopback has one (an image without cloud-init may have none; QEMU's
    user network answers DHCP)."""
    return ("ipadm show-addr -p -o addrobj | grep -v '^lo0/' | grep . >/dev/null || "
            "{ L=$(dladm show-phys -p -o link | head -1); ipadm create-if $L; "
            "ipadm create-addr -T dhcp -w 30 $L/v4; }")


def console_commands(client_public: str, host_private: str, host_public: str) -> list[str]:
    """Everything the serial-console fallback types, in order."""
    cmds = [*install_keys(client_public, host_private, host_public),
            permit_root_key_login(), ensure_dhcp(), restart_sshd(), print_host_key()]
    for c in cmds:
        if len(c) > MAX_COMMAND:
            raise InfraError(f"a console command is {len(c)} characters long, more than a "
                             f"serial line takes ({MAX_COMMAND}): {c[:60]}...")
    return cmds
