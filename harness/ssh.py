"""SSH to the guest with paramiko: pinned host key, timeouts, SFTP.

Readiness is polled cheaply (a TCP connect and the server's banner) before
paramiko is involved: QEMU's user network accepts the connection even while
the guest's sshd is not up yet, so "connected" means nothing until a banner
arrives.
"""

from __future__ import annotations

import secrets
import select
import shlex
import socket
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from .errors import CommandTimeout, GuestDied, SSHError, SSHHandshakeError, SSHTrustError

HOST = "127.0.0.1"
USER = "root"
DEATH_GRACE_S = 3.0
SIGNAL_SETTLE_S = 0.5
HANDSHAKE_S = 20.0
AEAD_CIPHER = "aes128-gcm@openssh.com"
# Base seconds for sshd to open a session. A full guest still starting its
# systemd units on a slow boot under TCG took more than 10 s for its first one
# ('Timeout opening channel', right after login; the cause inside the guest
# was not pinned down).
OPEN_SESSION_S = 30.0


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def _tar_member(path: Path, mode: int) -> bytearray:
    """`path` as one ustar member (header, data, padding), owned by root.
    Written by hand: tarfile's stream mode copies its buffer over and over."""
    data = path.read_bytes()
    info = tarfile.TarInfo(path.name)
    info.size, info.mode, info.mtime = len(data), mode, int(path.stat().st_mtime)
    member = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    member += data
    member += bytes(-len(data) % tarfile.BLOCKSIZE)
    return member


def _tar_link(name: str, target: str) -> bytes:
    """A symbolic link `name` -> `target` as one ustar member."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, int(time.time())
    return info.tobuf(tarfile.USTAR_FORMAT)


class _Replayed:
    """A socket whose first bytes were already read; paramiko reads them again.

    The guest's sshd forks (and re-executes) per connection before it sends
    its banner: reusing the connection that showed the banner saves that.
    """

    def __init__(self, sock: socket.socket, prefix: bytes) -> None:
        self._sock = sock
        self._prefix = prefix

    def recv(self, n: int) -> bytes:
        if self._prefix:
            head, self._prefix = self._prefix[:n], self._prefix[n:]
            return head
        return self._sock.recv(n)

    def __getattr__(self, name: str):  # send, settimeout, close, fileno, ...
        return getattr(self._sock, name)


# QEMU's user network accepts a connection at once and forwards its SYN into
# the guest; before the guest's network is up that SYN is lost, and waiting
# on that connection alone (as this did, one second a try) hid an sshd that
# had come up meanwhile. So a new attempt starts every BANNER_POLL_S while
# the last BANNER_ATTEMPTS stay open: the first to show a banner wins, and a
# slow banner still gets through on the connection that asked for it.
BANNER_POLL_S = 0.1
BANNER_ATTEMPTS = 10
READY_POLL_S = 0.01   # how soon the guest's "sshd listens" is acted on


def _connect(port: int, timeout: float) -> socket.socket:
    """A TCP connection to QEMU's forward of the guest's sshd, without Nagle's
    delay: SSH sends small messages back to back (NEWKEYS then the service
    request), and the second waited for the first one's ACK, which the
    receiver delays (40 ms, every handshake and many commands)."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def wait_banner(port: int, deadline: float, alive: Callable[[], bool],
                ready: Callable[[], bool] = lambda: False) -> _Replayed | None:
    """A connection on which an SSH server has sent its banner, or None if
    none did before `deadline` (or `alive()` turned False).

    While the guest boots, a new attempt starts every BANNER_POLL_S and the
    oldest of more than BANNER_ATTEMPTS is dropped (a SYN lost before the
    guest's network was up must not cost a retransmission). Once `ready()`
    (the guest said its sshd listens, on a network that is up) an attempt is
    waited for as long as it takes: every connection costs sshd a fork and,
    from OpenSSH 9.8, an exec of sshd-session, and on one slow vCPU ten of
    them a second would never let one finish.
    """
    attempts: list[socket.socket] = []
    since_ready: set[socket.socket] = set()   # attempts made once the network was up
    next_try = 0.0
    try:
        while time.monotonic() < deadline and alive():
            patient = ready()
            if patient and not since_ready:   # it just said so: try now, not at the next tick
                next_try = min(next_try, time.monotonic())
            waiting = patient and bool(since_ready & set(attempts))   # on a sure attempt
            if time.monotonic() >= next_try and not waiting:
                next_try = time.monotonic() + BANNER_POLL_S
                try:
                    attempts.append(_connect(port, 1.0))
                    if patient:
                        since_ready.add(attempts[-1])
                except OSError:
                    pass
                if len(attempts) > BANNER_ATTEMPTS and not patient:
                    attempts.pop(0).close()
            # Waiting on a sure attempt, only its answer (or death) matters: no spinning.
            pause = BANNER_POLL_S if waiting else max(0.0, next_try - time.monotonic())
            if not patient:
                pause = min(pause, READY_POLL_S)
            if not attempts:
                time.sleep(pause)
                continue
            for sock in select.select(attempts, [], [], pause)[0]:
                attempts.remove(sock)
                try:
                    head = sock.recv(4)
                except OSError:
                    head = b""
                if head.startswith(b"SSH-"):
                    return _Replayed(sock, head)
                sock.close()   # refused or closed: the guest's stack answered, sshd is not up
                if patient:   # not up yet, but about to be: a refusal costs the guest little
                    next_try = min(next_try, time.monotonic() + READY_POLL_S)
    finally:
        for sock in attempts:
            sock.close()
    return None


class _Shell:
    """A long-lived `sh` in the guest, fed commands on its stdin. A session of
    its own per command costs the guest about 70 ms under TCG (sshd forks a
    session process, which execs the shell), as much as the rest of a typical
    command's work; through this shell a command costs a fork. Each command
    runs in a subshell with stdin from /dev/null, so it changes nothing for
    the next; a nonce marks where its output and status end on each stream."""

    def __init__(self, chan: paramiko.Channel, ssh: GuestSSH) -> None:
        self.chan = chan
        self.ssh = ssh
        self.nonce = secrets.token_hex(8)
        self.count = 0
        self.ended = False

    def run(self, text: str, deadline: float, timeout: float) -> tuple[int, bytes, bytes]:
        """(status, stdout, stderr); status -1 if a signal killed it (the shell's
        128+N), as paramiko says for a session's command."""
        self.count += 1
        end = f"@@mmap-harness-{self.nonce}-{self.count}"
        self.chan.sendall(f"( {text}\n) </dev/null; s=$?; printf '%s\\n' {end} >&2; "
                          f"printf '%s %d\\n' {end} $s\n".encode())
        done, err_done = end.encode() + b" ", end.encode() + b"\n"
        out, err = bytearray(), bytearray()
        status: int | None = None
        while True:
            if self.chan.recv_ready():
                out += self.chan.recv(65536)
            elif self.chan.recv_stderr_ready():
                err += self.chan.recv_stderr(65536)
            elif status is None and (at := _status_at(out, done)) >= 0:
                status = int(out[at + len(done):out.index(b"\n", at)])
                del out[at:]   # and what a leftover background process wrote since
            elif status is not None and (at := err.find(err_done)) >= 0:
                del err[at:]
                break
            elif time.monotonic() > deadline:
                raise CommandTimeout(text, timeout, out.decode("utf-8", "replace"))
            elif self.chan.closed or self.chan.exit_status_ready():
                if not self.ssh._transport.is_active():
                    raise self.ssh._dropped(text)
                # The command took the shell down with it (a signal to the
                # shell's process group): as for a command killed by a signal.
                self.ended = True
                return -1, bytes(out), bytes(err)
            # stderr's marker comes with stdout's; paramiko's pipe wakes for stdout only
            elif not select.select([self.chan], [], [], 0.002 if status is not None else 0.1)[0]:
                self.ssh._check_alive()   # only when nothing came: it costs a waitpid
        return (-1 if status > 128 else status), bytes(out), bytes(err)


def _status_at(out: bytearray, done: bytes) -> int:
    """Where the shell's `<marker> <status>` line starts in `out`, once whole; else -1."""
    at = out.find(done)
    return at if at >= 0 and out.find(b"\n", at) >= 0 else -1


class GuestSSH:
    """An authenticated SSH transport to one guest.

    Every timeout given to it is in base seconds and multiplied by
    `timeout_scale` here, once (`--timeout-scale` for slow hosts).
    """

    def __init__(self, transport: paramiko.Transport, timeout_scale: float = 1.0) -> None:
        self._transport = transport
        self.timeout_scale = timeout_scale
        self._sftp: paramiko.SFTPClient | None = None
        self._shell: _Shell | None = None
        self._shell_lock = threading.Lock()   # one command at a time in the shell
        # Polled while a command runs: a reason when the guest is known dead
        # (a fatal kernel report, QEMU gone), so nobody waits for a timeout.
        self.dead: Callable[[], str | None] = lambda: None

    def _check_alive(self) -> None:
        reason = self.dead()
        if reason:
            raise GuestDied(reason)

    @classmethod
    def connect(cls, port: int, host_key: paramiko.PKey, client_key: paramiko.PKey,
                timeout_scale: float = 1.0,
                sock: _Replayed | socket.socket | None = None) -> GuestSSH:
        """Connect and authenticate; SSHTrustError for a server whose key is
        not `host_key` or that refuses `client_key`."""
        timeout = HANDSHAKE_S * timeout_scale
        try:
            if sock is None:
                sock = _connect(port, timeout)
            transport = paramiko.Transport(sock)
            # Offer only the pinned key's type, so the server must show that key.
            options = transport.get_security_options()
            options.key_types = [host_key.get_name()]
            # An AEAD cipher first: its tag is checked in C, where an HMAC's is
            # compared byte by byte in Python for every packet received.
            options.ciphers = (AEAD_CIPHER, *(c for c in options.ciphers if c != AEAD_CIPHER))
            transport.start_client(timeout=timeout)
        except (OSError, paramiko.SSHException) as e:
            raise SSHHandshakeError(f"SSH handshake with 127.0.0.1:{port} failed: {e}") \
                from None
        offered = transport.get_remote_server_key()
        if offered.get_name() != host_key.get_name() or offered.asbytes() != host_key.asbytes():
            transport.close()
            raise SSHTrustError(
                f"the guest on port {port} showed host key {offered.get_fingerprint().hex()} "
                f"({offered.get_name()}), not the image's pinned key "
                f"{host_key.get_fingerprint().hex()}: refusing to connect",
                hint="another process may own that port, or the image was altered; "
                     "rebuild it with `mmap-harness images clean` and run again")
        try:
            transport.auth_publickey(USER, client_key)
        except paramiko.SSHException as e:
            transport.close()
            raise SSHTrustError(f"the guest refused the harness's key: {e}",
                                hint="rebuild the image: `mmap-harness images clean`") \
                from None
        transport.set_keepalive(5)
        return cls(transport, timeout_scale)

    @classmethod
    def wait(cls, port: int, host_key: paramiko.PKey, client_key: paramiko.PKey,
             timeout: float, alive: Callable[[], bool], timeout_scale: float = 1.0,
             ready: Callable[[], bool] = lambda: False) -> GuestSSH:
        """Poll until the guest's sshd answers, then connect; SSHError on
        timeout (`timeout` is already scaled: it is the caller's boot budget).
        `ready`: the guest has said its sshd listens (see wait_banner)."""
        deadline = time.monotonic() + timeout
        sock = wait_banner(port, deadline, alive, ready)
        if sock is not None:
            return cls.connect(port, host_key, client_key, timeout_scale, sock=sock)
        state = "QEMU exited" if not alive() else f"no SSH banner within {timeout:.0f}s"
        raise SSHError(f"the guest's SSH server never answered: {state}")

    def run(self, command: list[str] | str, timeout: float = 60.0,
            check: bool = False) -> CommandResult:
        """Run `command` (an argv list is quoted for the guest's shell);
        CommandTimeout after `timeout` base seconds times the scale."""
        text = command if isinstance(command, str) else shlex.join(command)
        timeout *= self.timeout_scale
        start = time.monotonic()
        self._check_alive()
        if self._shell_lock.acquire(blocking=False):   # else another thread has the shell
            try:
                status, out, err = self._in_shell(text, start + timeout, timeout)
            finally:
                self._shell_lock.release()
        else:
            status, out, err = self._in_session(text, start + timeout, timeout)
        if status == -1:
            self._settle_death()
        result = CommandResult(text, status, out.decode("utf-8", "replace"),
                               err.decode("utf-8", "replace"), time.monotonic() - start)
        if check and not result.ok:
            raise SSHError(f"`{text}` failed in the guest (exit {status}): "
                           f"{result.stderr.strip() or result.stdout.strip()}")
        return result

    def _in_shell(self, text: str, deadline: float, timeout: float) -> tuple[int, bytes, bytes]:
        """`text` through the guest's long-lived shell, opened on first use."""
        if self._shell is None:
            self._shell = _Shell(self._open(), self)
        shell = self._shell
        try:
            return shell.run(text, deadline, timeout)
        except BaseException:
            shell.ended = True   # busy with what overran, or gone
            raise
        finally:
            if shell.ended:   # the next command gets a new shell
                shell.chan.close()
                self._shell = None

    def _open(self, command: str = "sh") -> paramiko.Channel:
        try:
            chan = self._transport.open_session(timeout=OPEN_SESSION_S * self.timeout_scale)
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._check_alive()
            raise SSHError(f"cannot run `{command}` in the guest: {e}") from None
        return chan

    def _in_session(self, text: str, deadline: float,
                    timeout: float) -> tuple[int, bytes, bytes]:
        """`text` in an SSH session of its own (sshd runs it with `sh -c`)."""
        chan = self._open(text)
        out, err = bytearray(), bytearray()
        with chan:
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.exit_status_ready() and (chan.eof_received or chan.closed):
                    break  # the status may come before the last data: wait for EOF
                elif time.monotonic() > deadline:
                    raise CommandTimeout(text, timeout, out.decode("utf-8", "replace"))
                elif not self._transport.is_active():
                    raise self._dropped(text)
                elif chan.closed:
                    # Closed since the exit-status check above (exit-status, EOF
                    # and close arrive together): the status is read below.
                    break
                else:
                    self._check_alive()
                    select.select([chan], [], [], 0.1)
            return chan.recv_exit_status(), bytes(out), bytes(err)

    def _dropped(self, text: str) -> SSHError:
        """The error for a connection lost while `text` ran (GuestDied, raised
        here, if the guest is known dead)."""
        self._check_alive()
        return SSHError(f"the SSH connection dropped while running `{text}`")

    def _settle_death(self) -> None:
        """No exit status: the process was killed, or the guest is dying.

        The console may still be printing the panic that explains it, so give
        `dead` a moment (scaled, like every wait here) before calling it an
        ordinary signal.
        """
        start = time.monotonic()
        grace, settle = (DEATH_GRACE_S * self.timeout_scale,
                         SIGNAL_SETTLE_S * self.timeout_scale)
        while time.monotonic() - start < grace:
            self._check_alive()
            if self._transport.is_active() and time.monotonic() - start > settle:
                return  # the connection lives on: an ordinary signal
            time.sleep(0.05)

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = paramiko.SFTPClient.from_transport(self._transport)
            if self._sftp is None:
                raise SSHError("the guest refused an SFTP session")
        return self._sftp

    def put(self, local: Path, remote: str, mode: int = 0o644) -> None:
        try:
            sftp = self._sftp_client()
            sftp.put(str(local), remote)
            sftp.chmod(remote, mode)
        except (OSError, paramiko.SSHException) as e:
            self._check_alive()
            raise SSHError(f"uploading {local} to the guest's {remote} failed: {e}") from None

    def put_all(self, files: list[Path], remote_dir: str, mode: int = 0o644,
                links: dict[str, str] | None = None, timeout: float = 120.0) -> None:
        """Upload `files` (and symbolic `links`, name -> target) into
        `remote_dir` (made if absent) as one tar stream into the guest's `tar`:
        one command instead of a round trip per file, which under TCG is most
        of an upload's time (SFTP acknowledges every 32 KiB). They are
        unpacked beside it and then renamed into place, so a name that was a
        link before is replaced, never written through."""
        if not files and not links:
            return
        remote = shlex.quote(remote_dir)
        command = (f"mkdir -p {remote} && up=$(mktemp -d {remote}/.upload.XXXXXX) && "
                   f"tar -xf - -C \"$up\" && mv -f \"$up\"/* {remote}/ && rmdir \"$up\"")
        deadline = time.monotonic() + timeout * self.timeout_scale
        self._check_alive()
        try:
            chan = self._transport.open_session(timeout=OPEN_SESSION_S * self.timeout_scale)
            chan.settimeout(timeout * self.timeout_scale)
            chan.exec_command(command)
            with chan:
                for f in files:
                    chan.sendall(memoryview(_tar_member(f, mode)))
                for name, target in (links or {}).items():
                    chan.sendall(_tar_link(name, target))
                chan.sendall(bytes(2 * tarfile.BLOCKSIZE))   # the archive's end
                chan.shutdown_write()
                while not chan.exit_status_ready():
                    if time.monotonic() > deadline or not self._transport.is_active():
                        raise OSError("no answer from the guest's tar")
                    select.select([chan], [], [], 0.1)
                status = chan.recv_exit_status()
                err = chan.recv_stderr(4096).decode("utf-8", "replace").strip()
        except (OSError, paramiko.SSHException, EOFError) as e:
            self._check_alive()
            raise SSHError(f"uploading {len(files)} files to the guest's {remote_dir} failed: "
                           f"{e}") from None
        if status != 0:
            raise SSHError(f"uploading {len(files)} files to the guest's {remote_dir} failed: "
                           f"`{command}` exited {status}: {err}")

    def get(self, remote: str, local: Path) -> None:
        try:
            self._sftp_client().get(remote, str(local))
        except (OSError, paramiko.SSHException) as e:
            raise SSHError(f"downloading the guest's {remote} failed: {e}") from None

    def close(self) -> None:
        if self._shell is not None:
            self._shell.chan.close()
        if self._sftp is not None:
            self._sftp.close()
        self._transport.close()
