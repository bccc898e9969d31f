"""Reaching an illumos guest over its serial console: waiting for the
NoCloud seed to take effect, and, when it did not, logging in as root on
the console and installing the harness's keys by typing commands.

    ready = wait_ready(console, instance_id, timeout, dead, name)
    if not ready.seeded:
        login_and_install(console, keys, password, dead, name, scale)
    # then GuestSSH.wait(...) with keys.host_key_pub pinned

Every text the automation waits for is a named constant below, with where
it comes from: the illumos gate (illumos-gate at bb93684319) and a console
session recorded in OmniOS's own documentation (omniosorg/omniosorg.github.io,
_docs/info/bhyve_migrate.md: an OmniOS boot to the login prompt and a root
login on the serial console). tests/test_omnios.py checks the patterns
against that recorded text.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ..console import Console
from ..errors import BootError, ConfigError, InfraError
from .guest_setup import FAILED_WORD, READY_WORD, console_commands
from .keys import GuestKeys

# The kernel's banner: uts/common/os/logsubr.c, printf("\rSunOS Release %s
# Version %s %u-bit\n"); recorded: "SunOS Release 5.11 Version
# omnios-master-c6cc2b6b38 64-bit". Its absence means the firmware or the
# image's loader never started the kernel.
KERNEL_BANNER = re.compile(r"SunOS Release (\S+) Version (\S+) (\d+)-bit")
# ttymon's prompt on the console: cmd/svc/milestone/make-console-login-xml,
# prompt "`uname -n` console login:"; recorded: "bloody console login:".
# LOGIN_PROMPT is the prompt waiting at the end of its line; LOGIN_PROMPT_SHOWN
# finds it even when syslog went on writing on the same line.
LOGIN_PROMPT = re.compile(r"^\S+ console login: *$")
LOGIN_PROMPT_SHOWN = re.compile(r"\S+ console login:")
# login(1)'s password prompt: cmd/login/login.c, passwdmsg[] = "Password:";
# recorded right after "bloody console login: root". It is shown for an
# account without a password too (OmniOS docs, setup/freshinstall: "the
# password for user root will be blank (just press return)").
PASSWORD_PROMPT = re.compile(r"^Password: *$")
# A shell prompt: recorded "bloody#" (root, OmniOS of 2018) and
# "rigby@client:~$" (a user, r151036; root's is "root@host:~#").
SHELL_PROMPT = re.compile(r"[#$] *$")
# cmd/login/login.c: incorrectmsg[] = "Login incorrect\n".
LOGIN_INCORRECT = re.compile(r"^Login incorrect")
# An expired or empty password where one is required (PASSREQ=YES): login.c
# validate_account() prints "Choose a new password." and pam_authtok_get
# prompts "New Password: ".
NEW_PASSWORD = re.compile(r"^(Choose a new password\.|New Password:)")
# Printed by the seed's runcmd (guest_setup.seed_runcmd), wherever the
# console's cursor was.
SEED_READY = re.compile(rf"{READY_WORD} (\S+)")
SEED_FAILED = re.compile(rf"{FAILED_WORD} (\S+)")

USER = "root"
SLICE_S = 1.0           # how often a wait looks at the guest's health
LOGIN_GRACE_S = 15.0    # after the login prompt, how long a seed's ready line may lag
LOGIN_S = 180.0         # from typing the user name to a shell
NUDGE_S = 20.0          # console quiet this long before a prompt: press return
COMMAND_S = 120.0       # one typed command (the sshd restart waits for SMF)
MARK = "mmh"            # the word that frames a typed command's exit status


class Seen(Enum):
    """What the console shows last, as far as a login is concerned."""

    NOTHING = "nothing"
    LOGIN = "login prompt"
    PASSWORD = "password prompt"
    SHELL = "shell prompt"
    INCORRECT = "Login incorrect"
    NEW_PASSWORD = "a demand for a new password"


@dataclass(frozen=True)
class Readiness:
    seeded: bool            # the seed's keys are in and sshd restarted: use SSH
    reason: str             # why not, when not
    kernel: str = ""        # "5.11 omnios-r151054-..." from the banner, if seen


def kernel_version(text: str) -> str:
    m = KERNEL_BANNER.search(text)
    return f"{m.group(1)} {m.group(2)}" if m else ""


def login_state(text: str) -> Seen:
    """What the console shows, from `text` printed since the last thing typed.

    A refusal anywhere in it wins (it cannot be taken back); otherwise the
    last line that is a prompt does, so messages printed after a prompt
    (syslog's "ROOT LOGIN /dev/console", kernel notices) do not hide it.
    """
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if any(LOGIN_INCORRECT.match(line) for line in lines):
        return Seen.INCORRECT
    if any(NEW_PASSWORD.match(line) for line in lines):
        return Seen.NEW_PASSWORD
    for line in reversed(lines):
        if LOGIN_PROMPT.match(line):
            return Seen.LOGIN
        if PASSWORD_PROMPT.match(line):
            return Seen.PASSWORD
        if SHELL_PROMPT.search(line) and not line.startswith(f"{MARK}-"):
            return Seen.SHELL
    return Seen.NOTHING


def framed(command: str, nonce: str) -> str:
    """`command` followed by a line that reports its exit status. The line
    as typed (and echoed) says `=$?`, only the shell's output has digits."""
    return f"{command}; echo {MARK}-{nonce}-rc=$?"


def status_pattern(nonce: str) -> re.Pattern[str]:
    return re.compile(rf"^{MARK}-{nonce}-rc=(\d+)\s*$", re.M)


def exit_status(text: str, nonce: str) -> int | None:
    m = status_pattern(nonce).search(text)
    return int(m.group(1)) if m else None


def _alive_or_raise(console: Console, dead: Callable[[], str | None], name: str) -> None:
    reason = dead()
    if reason:
        raise BootError(f"{name} did not come up: {reason}", console.tail(25))
    if console.eof:
        raise BootError(f"{name} did not come up: QEMU exited", console.tail(25),
                        hint="console.log in the results directory has the whole boot")


def wait_ready(console: Console, instance_id: str, timeout: float,
               dead: Callable[[], str | None] = lambda: None,
               name: str = "the guest", scale: float = 1.0) -> Readiness:
    """Wait for the seed's ready line (seeded: SSH may be used now) or for
    the console login prompt without it (not seeded: log in on the console).
    BootError with the console tail if neither comes within `timeout`
    seconds (already scaled), or the guest dies; the ready line may lag the
    prompt by LOGIN_GRACE_S times `scale`."""
    deadline = time.monotonic() + timeout
    prompt_at: float | None = None
    while True:
        _alive_or_raise(console, dead, name)
        text = console.text()
        kernel = kernel_version(text)
        for m in SEED_READY.finditer(text):
            if m.group(1) == instance_id:
                return Readiness(True, "", kernel)
        for m in SEED_FAILED.finditer(text):
            if m.group(1) == instance_id:
                return Readiness(False, "the seed's runcmd could not restart sshd with the "
                                        "harness's keys (see console.log)", kernel)
        if prompt_at is None and LOGIN_PROMPT_SHOWN.search(text):
            prompt_at = time.monotonic()
        now = time.monotonic()
        if prompt_at is not None and now - prompt_at > LOGIN_GRACE_S * scale:
            return Readiness(False, "the console login prompt came without the seed's ready "
                                    "line: the image has no cloud-init, or it did not read "
                                    "the NoCloud seed", kernel)
        if now > deadline:
            where = (f"the kernel ({kernel}) started but neither the seed's ready line nor "
                     "a console login prompt came" if kernel else
                     "the kernel never started (no 'SunOS Release' banner on the console): "
                     "the firmware or the image's loader did not boot it")
            raise BootError(f"{name} did not come up within {timeout:.0f}s: {where}",
                            console.tail(25),
                            hint="console.log in the results directory has the whole boot; "
                                 "check that the image boots under QEMU with a serial "
                                 "console (OmniOS cloud images do)")
        console.wait_for(r"\n", min(SLICE_S, deadline - now), since=len(text))


def login(console: Console, password: str, dead: Callable[[], str | None],
          name: str, scale: float = 1.0) -> None:
    """Log in as root on the console: type the user name, then the password
    (empty for OmniOS images) at its prompt, until a shell prompt shows."""
    deadline = time.monotonic() + LOGIN_S * scale
    since = console.position()
    console.send(f"{USER}\r")
    sent_password = False
    last_change, seen_len = time.monotonic(), 0
    while True:
        _alive_or_raise(console, dead, name)
        text = console.text()[since:]
        state = login_state(text)
        if state is Seen.SHELL:
            return
        if state is Seen.INCORRECT:
            raise ConfigError(f"{name}: root's login on the serial console was refused "
                              f"(\"Login incorrect\"):\n{console.tail(10)}",
                              hint="set [image] root_password in the guest's definition to "
                                   "root's console password")
        if state is Seen.NEW_PASSWORD:
            raise ConfigError(f"{name}: the console login asks for a new root password; "
                              f"the harness does not set passwords:\n{console.tail(10)}",
                              hint="give root a password in the image and set [image] "
                                   "root_password, or use an image with a NoCloud-capable "
                                   "cloud-init")
        if state is Seen.PASSWORD and not sent_password:
            since = console.position()
            console.send(f"{password}\r")
            sent_password = True
            continue
        if state is Seen.LOGIN:  # the prompt came again: login gave up or timed out
            since = console.position()
            console.send(f"{USER}\r")
            sent_password = False
        now = time.monotonic()
        if len(text) != seen_len:
            last_change, seen_len = now, len(text)
        elif (state is Seen.NOTHING and now - last_change > NUDGE_S * scale
              and (not sent_password or not password)):
            console.send("\r")  # no prompt came (typed too early?): ask for one again
            last_change = now
        if now > deadline:
            raise InfraError(f"{name}: no shell on the serial console {LOGIN_S * scale:.0f}s "
                             f"after typing {USER!r} (last seen: {state.value}):\n"
                             f"{console.tail(15)}")
        console.wait_for(r"[\s\S]", min(SLICE_S, deadline - now), since=since + len(text))


def run(console: Console, command: str, dead: Callable[[], str | None], name: str,
        timeout: float = COMMAND_S) -> None:
    """Type `command` into the logged-in shell and wait for its exit status;
    InfraError with the console tail if it fails or never answers."""
    nonce = secrets.token_hex(4)
    since = console.position()
    console.send(framed(command, nonce) + "\r")
    deadline = time.monotonic() + timeout
    pattern = status_pattern(nonce)
    while True:
        _alive_or_raise(console, dead, name)
        m = console.wait_for(pattern, min(SLICE_S, max(deadline - time.monotonic(), 0)),
                             since=since)
        if m is not None:
            if int(m.group(1)) != 0:
                raise InfraError(f"{name}: `{command}` failed on the serial console "
                                 f"(exit {m.group(1)}):\n{console.tail(15)}")
            return
        if time.monotonic() > deadline:
            raise InfraError(f"{name}: `{command}` typed on the serial console did not "
                             f"answer within {timeout:.0f}s:\n{console.tail(15)}")


def login_and_install(console: Console, keys: GuestKeys, password: str = "",
                      dead: Callable[[], str | None] = lambda: None,
                      name: str = "the guest", scale: float = 1.0) -> None:
    """The fallback: root's console login, then the harness's client key in
    /root/.ssh/authorized_keys (0600, directory 0700), the pinned host key,
    `PermitRootLogin without-password`, a DHCP address if there is none,
    and sshd restarted (waiting until it is online)."""
    login(console, password, dead, name, scale)
    for command in console_commands(keys.client_public, keys.host_private,
                                    keys.host_public):
        run(console, command, dead, name, COMMAND_S * scale)
