"""Exceptions of mmap-harness, each with a message written for people.

    HarnessError                 anything the harness reports instead of a traceback
     +-- ConfigError             bad input: a definition, spec or option (fix the input)
     +-- HostError               the host lacks something (a tool, root, disk space)
     |    +-- CacheDamaged       a cached build root or image changed since it was built
     +-- InfraError              the harness or the host failed while working
     |    +-- ImageBuildError    debootstrap/apt/initramfs failed (log kept)
     |    +-- SSHError           the guest's SSH could not be reached or used
     |    |    +-- SSHTrustError the guest showed another host key or refused our key
     |    +-- CommandTimeout     a guest command overran its timeout
     +-- BootError               the guest kernel did not come up (console tail kept)
     +-- GuestDied               the guest stopped answering mid-run: a kernel crash or a hang
     +-- BuildError              a module or workload did not compile (compiler output kept)
     +-- Interrupted             SIGINT/SIGTERM arrived; the run was stopped cleanly

Kernel failures (BootError) and harness failures (InfraError) are kept apart,
as syzkaller's vm layer does: the first is a finding, the second a broken tool.
Each class names whose failure it is in `kind`, which results.json records as
`error_kind`: input, infra, boot, build, driver, kernel-crash or interrupted.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the CLI turns into a one-paragraph message."""

    hint: str = ""
    kind: str = "infra"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        if hint:
            self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  what to do: {self.hint}" if self.hint else self.message

    def __reduce__(self) -> tuple:
        # Whole across a pickle (a `run --jobs` guest's process reports to the
        # run's), whatever arguments a subclass's __init__ takes.
        return (_rebuilt, (type(self), self.__dict__))


def _rebuilt(cls: type[HarnessError], state: dict) -> HarnessError:
    error = cls.__new__(cls)
    Exception.__init__(error, state["message"])
    error.__dict__.update(state)
    return error


class ConfigError(HarnessError):
    """A guest definition, driver spec or command-line value is invalid."""

    kind = "input"


class HostError(HarnessError):
    """The host is missing a tool, a permission or space the run needs."""


class CacheDamaged(HostError):
    """A cache entry no longer matches its integrity.json (files deleted,
    added, replaced or rewritten); it is refused before anything is compiled
    against or booted from it, and the hint names the `images clean` command."""


class InfraError(HarnessError):
    """The harness or host failed while doing its work."""


class ImageBuildError(InfraError):
    """Building a guest image or build root failed; `log` names the kept log."""

    def __init__(self, message: str, log: str = "", hint: str = "") -> None:
        super().__init__(message + (f" (log: {log})" if log else ""), hint)
        self.log = log


class SSHError(InfraError):
    """The guest's SSH server could not be reached or used."""


class SSHHandshakeError(SSHError):
    """The guest's sshd answered, but the SSH handshake with it failed: the
    kernel booted and its userland runs, so unless the kernel then crashed,
    the failure is between the harness and sshd, not the guest's."""


class SSHTrustError(SSHError):
    """The guest showed a host key other than the image's, or refused the
    image's client key: the image or the port is not what the harness made,
    which is never the kernel's fault."""


class CommandTimeout(InfraError):
    """A command in the guest did not finish in time."""

    def __init__(self, command: str, timeout: float, output: str = "") -> None:
        super().__init__(f"guest command timed out after {timeout:.0f}s: {command}")
        self.command = command
        self.timeout = timeout
        self.output = output


class BootError(HarnessError):
    """The guest kernel did not reach SSH; `console_tail` holds its last words.
    `hung`: the console fell silent while booting (no report, no crash)."""

    kind = "boot"

    def __init__(self, message: str, console_tail: str = "", hint: str = "",
                 hung: bool = False) -> None:
        tail = f"\n--- last console lines ---\n{console_tail}" if console_tail else ""
        super().__init__(message + tail, hint)
        self.console_tail = console_tail
        self.hung = hung


class GuestDied(HarnessError):
    """The guest crashed or hung while the harness was using it."""

    kind = "kernel-crash"


class DriverError(HarnessError):
    """A driver would not load, its device did not appear, or it would not unload."""

    kind = "driver"


class BuildError(HarnessError):
    """A driver or workload failed to compile; `output` is the compiler's."""

    kind = "build"

    def __init__(self, what: str, output: str, log: str = "", hint: str = "") -> None:
        where = f" (log: {log})" if log else ""
        super().__init__(f"{what} failed to compile{where}:\n{output.rstrip()}", hint)
        self.output = output
        self.log = log


class Interrupted(HarnessError):
    """The run was interrupted by a signal and cleaned up."""

    kind = "interrupted"


def why_stopped(e: BaseException) -> str:
    """What stopped a run, in words (a KeyboardInterrupt has none of its own)."""
    if isinstance(e, HarnessError):
        return e.message
    if isinstance(e, KeyboardInterrupt):
        return "stopped by SIGINT"
    return str(e) or type(e).__name__
