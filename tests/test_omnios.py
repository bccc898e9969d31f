"""The illumos (OmniOS) guest pieces, tested where they can be without an
illumos image: definitions and --image, the disk-image QEMU command line
(and a real QEMU accepting it), the NoCloud seed ISO read back, the shell
commands given to the guest (run here with sh against temporary files),
the console automation's patterns against console text recorded from real
OmniOS, the illumos report table against report lines made with the
kernel's own format strings, and the argv of the in-guest steps.

What is NOT tested here, because no illumos image can be had on this
machine: booting OmniOS, cloud-init reading the seed, the console login
itself, and building or loading a driver in an illumos guest. No stand-in
plays the part of an illumos console.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pycdlib
import pytest

from conftest import ConsoleLines
from harness import cli, guests, images
from harness.cache import Cache
from harness.errors import ConfigError, InfraError
from harness.guests import Flavour
from harness.illumos import console_login, guest_setup, patterns, seed, steps
from harness.illumos.keys import make_keys
from harness.illumos.machine import machine_spec
from harness.progress import Progress
from harness.qemu import DiskImage, Machine, MachineSpec
from harness.linux.patterns import TABLE as LINUX_TABLE
from harness.watcher import Watcher

QCOW2_HEAD = b"QFI\xfb\x00\x00\x00\x03" + bytes(56)

# ---------------------------------------------------------------- definitions


def write_def(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(f'name = "{name}"\ndescription = "t"\n' + text)
    return path


ILLUMOS = 'family = "illumos"\n[image]\npath = "{path}"\nformat = "{fmt}"\n'
DEBIAN = ('[debian]\nsuite = "bookworm"\nkernel_package = "linux-image-amd64"\n'
          'headers_package = "linux-headers-amd64"\n')


def test_shipped_omnios_example_needs_an_image_and_is_not_default():
    g = guests.find("omnios-example")
    assert g.family == "illumos" and g.debian is None and g.image is not None
    assert g.image.path == "" and g.image.format == "qcow2" and not g.default
    assert guests.default_guest().name == "debian-bookworm"
    with pytest.raises(ConfigError) as e:
        guests.image_path(g)
    assert "needs a disk image" in str(e.value) and "--image PATH" in e.value.hint


@pytest.mark.parametrize("text, words", [
    ('family = "illumos"\n' + DEBIAN, "an illumos guest needs an [image] table"),
    ('family = "linux"\n[image]\npath = ""\n', "a linux guest needs a [debian] table"),
    ('family = "linux"\n' + DEBIAN + '[image]\npath = ""\n', "exactly one of the tables"),
    ('family = "illumos"\n', "exactly one of the tables"),
    ('family = "plan9"\n[image]\n', "family 'plan9' is not a kernel family"),
    (ILLUMOS.format(path="", fmt="vmdk"), "image.format 'vmdk' must be one of qcow2, raw"),
    (ILLUMOS.format(path="", fmt="qcow2") + 'colour = 1\n', "unknown key(s) colour"),
    (ILLUMOS.format(path="", fmt="qcow2") + '[tiny]\nboot_modules = []\n',
     "[tiny] is for linux guests"),
    (ILLUMOS.format(path="", fmt="qcow2") + '[qemu]\nkernel_args = ["-v"]\n',
     "qemu.kernel_args cannot be given to an illumos guest"),
    (ILLUMOS.format(path="", fmt="qcow2") + 'compiler = "gcc; reboot"\n',
     "image.compiler 'gcc; reboot' must be a command name"),
])
def test_definition_kinds_are_strict(tmp_path: Path, text: str, words: str):
    path = write_def(tmp_path, "g", text)
    with pytest.raises(ConfigError) as e:
        guests.load_definition(path)
    assert words in str(e.value)


def test_image_path_is_relative_to_the_definition(tmp_path: Path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "o.qcow2").write_bytes(QCOW2_HEAD)
    g = guests.load_definition(write_def(tmp_path, "g", ILLUMOS.format(path="img/o.qcow2",
                                                                        fmt="qcow2")))
    assert g.image.path == str(tmp_path.resolve() / "img" / "o.qcow2")
    assert guests.image_path(g) == tmp_path.resolve() / "img" / "o.qcow2"


@pytest.mark.parametrize("content, fmt, words, hint", [
    (None, "qcow2", "no such file", "--image"),
    (b"\0" * 512, "qcow2", "is not a qcow2 image", 'format = "raw"'),
    (QCOW2_HEAD, "raw", "is a qcow2 image", 'format = "qcow2"'),
    (b"KDMV\x01\0\0\0", "qcow2", "is a VMDK image", "qemu-img convert"),
    (b"\x28\xb5\x2f\xfd\0", "raw", "is zstd-compressed", "zstd -d"),
])
def test_image_is_checked_before_anything_starts(tmp_path: Path, content, fmt, words, hint):
    image = tmp_path / "disk.img"
    if content is not None:
        image.write_bytes(content)
    g = guests.load_definition(write_def(tmp_path, "g", ILLUMOS.format(path=image, fmt=fmt)))
    with pytest.raises(ConfigError) as e:
        guests.image_path(g)
    assert words in str(e.value) and str(image) in str(e.value) and hint in e.value.hint


def test_a_directory_is_not_an_image(tmp_path: Path):
    with pytest.raises(ConfigError, match="not a regular file"):
        guests.with_image(guests.find("omnios-example"), tmp_path)


def test_cli_image_option(tmp_path: Path, capsys):
    missing = tmp_path / "omnios-r151054.cloud.qcow2"
    assert cli.main(["run", "--guest", "omnios-example", "--image", str(missing),
                     "--results", str(tmp_path / "r")]) == cli.EXIT_INPUT
    assert f"disk image {missing}: no such file" in capsys.readouterr().err
    assert cli.main(["run", "--guest", "omnios-example",
                     "--results", str(tmp_path / "r")]) == cli.EXIT_INPUT
    assert "omnios-example needs a disk image" in capsys.readouterr().err
    missing.write_bytes(QCOW2_HEAD)
    assert cli.main(["run", "--image", str(missing),   # the default guest is Linux
                     "--results", str(tmp_path / "r")]) == cli.EXIT_INPUT
    assert "--image goes with a guest that boots a disk image" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()   # refused before a run directory was made


def test_with_image_overrides_the_definition(tmp_path: Path):
    image = tmp_path / "o.qcow2"
    image.write_bytes(QCOW2_HEAD)
    g = guests.with_image(guests.find("omnios-example"), image)
    assert guests.image_path(g) == image and g.image.format == "qcow2"
    with pytest.raises(ConfigError, match="debian-bookworm is a linux guest"):
        guests.with_image(guests.find("debian-bookworm"), image)


def test_image_guests_have_nothing_cached(tmp_path: Path):
    cache = Cache(tmp_path / "cache")
    keys = images.current_keys(list(guests.all_definitions().values()), cache)
    assert not any(k.startswith("omnios-example") for k in keys)
    with pytest.raises(ConfigError, match="boots its own disk image"):
        images.ensure(guests.find("omnios-example"), Flavour.TINY, cache, Progress())


# --------------------------------------------------------------- command line


def disk_spec(tmp_path: Path, **kw) -> MachineSpec:
    return MachineSpec(name="o", accel="tcg",
                       boot_disk=DiskImage(tmp_path / "o.qcow2", "qcow2", tmp_path / "seed.iso"),
                       **kw)


@pytest.mark.parametrize("kw, words", [
    ({"kernel": Path("/k"), "initrd": Path("/i")}, "either a kernel or a boot disk"),
    ({"kernel_args": ["x"]}, "no kernel arguments"),
    ({"disk": Path("/d")}, "no kernel arguments or extra disk"),
])
def test_machine_spec_is_one_boot_or_the_other(tmp_path: Path, kw, words):
    with pytest.raises(InfraError, match=words):
        disk_spec(tmp_path, **kw)
    with pytest.raises(InfraError, match="either a kernel or a boot disk"):
        MachineSpec(name="x", accel="tcg")


def test_machine_spec_of_a_definition(tmp_path: Path):
    image = tmp_path / "o.qcow2"
    image.write_bytes(QCOW2_HEAD)
    g = guests.with_image(guests.find("omnios-example"), image)
    spec = machine_spec(g, tmp_path / "seed.iso", "tcg")
    assert spec.boot_disk == DiskImage(image, "qcow2", tmp_path / "seed.iso")
    assert (spec.memory_mib, spec.cpus, spec.machine) == (g.qemu.memory_mib, g.qemu.cpus, "q35")
    assert spec.kernel is None and spec.kernel_args == []


def test_qemu_takes_the_disk_image_command_line(tmp_path: Path):
    """A real QEMU starts from the disk-image argv and shows the devices an
    OmniOS guest needs. Nothing boots: the disk is blank."""
    blank = tmp_path / "blank.raw"
    blank.write_bytes(bytes(1 << 20))
    keys = make_keys(tmp_path / "keys")
    iso = seed.write_seed_iso(tmp_path / "seed.iso",
                              seed.SeedConfig.for_guest("omnios-example", blank, keys))
    spec = MachineSpec(name="o", accel="tcg", memory_mib=256, cpus=1,
                       boot_disk=DiskImage(blank, "raw", iso))
    with Machine(spec, tmp_path / "w", tmp_path / "console.log") as m:
        block, pci, port = m.hmp("info block"), m.hmp("info pci"), m.ssh_port()
    assert f"Backing file:     {blank}" in block          # snapshot=on: an overlay in front
    assert re.search(rf"seed \(#block\d+\): {re.escape(str(iso))} \(raw, read-only\)", block)
    # Slot 4, virtio block, subsystem 1af4:0002: /pci@0,0/pci1af4,2@4 to illumos.
    assert re.search(r"Bus  0, device   4, function 0:\s+.*1af4:1001\s+PCI subsystem 1af4:0002",
                     pci)
    assert "SATA controller" in pci and port > 0
    assert blank.read_bytes() == bytes(1 << 20)


# ------------------------------------------------------------------ seed ISO


def seed_config(tmp_path: Path) -> tuple[seed.SeedConfig, Path]:
    image = tmp_path / "o.qcow2"
    image.write_bytes(QCOW2_HEAD)
    keys = make_keys(tmp_path / "keys")
    return seed.SeedConfig.for_guest("omnios-example", image, keys), keys.dir


def read_iso(path: Path) -> tuple[pycdlib.PyCdlib, dict[str, bytes]]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    files = {}
    for name, (_, rr, joliet) in seed.FILES.items():
        by_rr, by_joliet = io.BytesIO(), io.BytesIO()
        iso.get_file_from_iso_fp(by_rr, rr_path=f"/{rr}")
        iso.get_file_from_iso_fp(by_joliet, joliet_path=joliet)
        assert by_rr.getvalue() == by_joliet.getvalue()
        files[name] = by_rr.getvalue()
    return iso, files


def test_seed_iso_reads_back_as_nocloud_wants_it(tmp_path: Path):
    cfg, keydir = seed_config(tmp_path)
    path = seed.write_seed_iso(tmp_path / "seed.iso", cfg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600          # it holds a private key
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".seed-")] == []
    iso, files = read_iso(path)
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        assert iso.has_rock_ridge() and iso.has_joliet()
        names = {c.rock_ridge.name().decode() for c in iso.list_children(rr_path="/")
                 if c.rock_ridge is not None and c.is_file()}
        assert names == {"meta-data", "user-data"}
    finally:
        iso.close()
    meta = files["meta-data"].decode()
    assert meta == f"instance-id: {cfg.instance_id}\nlocal-hostname: omnios-example\n"
    first, body = files["user-data"].decode().split("\n", 1)
    assert first == "#cloud-config"
    data = json.loads(body)
    assert data["disable_root"] is False and data["users"] == []
    assert data["ssh_authorized_keys"] == [(keydir / "harness_ed25519.pub").read_text().strip()]
    assert data["ssh_keys"] == {
        "ed25519_private": (keydir / "ssh_host_ed25519_key").read_text(),
        "ed25519_public": (keydir / "ssh_host_ed25519_key.pub").read_text().strip()}
    assert data["ssh_deletekeys"] is True and data["ssh_genkeytypes"] == []
    (runcmd,) = data["runcmd"]
    assert "PermitRootLogin without-password" in runcmd
    assert "svcadm disable -st svc:/network/ssh:default && svcadm enable -s" in runcmd


def test_blkid_sees_the_cidata_label(tmp_path: Path):
    """Linux's cloud-init finds the seed with blkid: LABEL and TYPE."""
    cfg, _ = seed_config(tmp_path)
    path = seed.write_seed_iso(tmp_path / "seed.iso", cfg)
    out = subprocess.run(["blkid", "-o", "export", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert "LABEL=cidata" in out.splitlines() and "TYPE=iso9660" in out.splitlines()


def test_seed_is_replaced_whole_and_failures_are_infra_errors(tmp_path: Path):
    cfg, _ = seed_config(tmp_path)
    path = tmp_path / "seed.iso"
    path.write_text("old")
    seed.write_seed_iso(path, cfg)
    assert path.read_bytes()[32769:32774] == b"CD001"      # the primary volume descriptor
    with pytest.raises(InfraError, match="cannot write the NoCloud seed"):
        seed.write_seed_iso(tmp_path / "nowhere" / "seed.iso", cfg)
    with pytest.raises(InfraError, match="hostname"):
        seed.meta_data(seed.SeedConfig(cfg.instance_id, "Bad_Host", cfg.authorized_key,
                                       cfg.host_private, cfg.host_public))


def test_instance_id_is_unique_per_image_and_keys(tmp_path: Path):
    cfg, keydir = seed_config(tmp_path)
    image = tmp_path / "o.qcow2"
    pub = (keydir / "ssh_host_ed25519_key.pub").read_text().strip()
    assert seed.instance_id(image, pub) == cfg.instance_id
    assert re.fullmatch(r"mmap-harness-[0-9a-f]{16}", cfg.instance_id)
    assert seed.instance_id(image, pub + "x") != cfg.instance_id
    os.utime(image, ns=(1, 1))
    assert seed.instance_id(image, pub) != cfg.instance_id


def test_ready_line_is_what_the_runcmd_prints_and_not_its_text(tmp_path: Path):
    iid = "mmap-harness-0123456789abcdef"
    line = guest_setup.seed_runcmd(iid)
    assert not console_login.SEED_READY.search(line)
    assert not console_login.SEED_FAILED.search(line)
    for word, pattern in ((guest_setup.READY_WORD, console_login.SEED_READY),
                          (guest_setup.FAILED_WORD, console_login.SEED_FAILED)):
        say = guest_setup._say(word, iid).replace(" > /dev/console", "")
        out = subprocess.run(["sh", "-c", say], capture_output=True, text=True, check=True)
        m = pattern.search(out.stdout)
        assert m and m.group(1) == iid and out.stdout == f"{word} {iid}\n"


# ---------------------------------------------------- commands for the guest


def test_permit_root_key_login_edits_sshd_config_in_place(tmp_path: Path):
    config = tmp_path / "sshd_config"
    config.write_text("Port 22\nPermitRootLogin no\n  permitrootlogin yes\n"
                      "Match User x\n  X11Forwarding no\n")
    inode = config.stat().st_ino
    subprocess.run(["sh", "-c", guest_setup.permit_root_key_login(str(config))], check=True)
    assert config.read_text() == ("PermitRootLogin without-password\nPort 22\n"
                                  "Match User x\n  X11Forwarding no\n")
    assert config.stat().st_ino == inode and not (tmp_path / "sshd_config.new").exists()


def test_install_keys_commands_leave_the_right_files_and_modes(tmp_path: Path):
    keys = make_keys(tmp_path / "keys")
    ssh_dir, host_key = tmp_path / "root" / ".ssh", tmp_path / "etc" / "ssh_host_ed25519_key"
    host_key.parent.mkdir()
    cmds = guest_setup.install_keys(keys.client_public, keys.host_private, keys.host_public,
                                    str(ssh_dir), str(host_key))
    subprocess.run(["sh", "-ec", "\n".join(cmds)], check=True)
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    authorized = ssh_dir / "authorized_keys"
    assert stat.S_IMODE(authorized.stat().st_mode) == 0o600
    assert authorized.read_text() == keys.client_public + "\n"
    assert host_key.read_text() == keys.host_private
    assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
    assert Path(f"{host_key}.pub").read_text() == keys.host_public + "\n"


def test_console_commands_fit_a_serial_line_and_parse(tmp_path: Path):
    keys = make_keys(tmp_path / "keys")
    cmds = guest_setup.console_commands(keys.client_public, keys.host_private, keys.host_public)
    assert all(len(c) <= guest_setup.MAX_COMMAND for c in cmds)
    assert cmds[-2:] == [guest_setup.restart_sshd(), guest_setup.print_host_key()]
    for c in [*cmds, guest_setup.seed_runcmd("mmap-harness-0")]:
        subprocess.run(["sh", "-n", "-c", c], check=True)
    with pytest.raises(InfraError, match="characters a key never has"):
        guest_setup.install_keys("ssh-ed25519 AAAA x'; reboot; '", keys.host_private,
                                 keys.host_public)


# -------------------------------------------- console text recorded from OmniOS

# Verbatim from OmniOS's documentation: omniosorg/omniosorg.github.io,
# _docs/info/bhyve_migrate.md (commit 7563a959 or later; lines 243-268 at
# 81a74023): an OmniOS guest booting to its serial console's login prompt,
# then root logging in.
RECORDED_BOOT = """\
Loading unix...
Loading /platform/i86pc/amd64/boot_archive...
Loading /platform/i86pc/amd64/boot_archive.hash...
Booting...

SunOS Release 5.11 Version omnios-master-c6cc2b6b38 64-bit
Copyright (c) 1983, 2010, Oracle and/or its affiliates. All rights reserved.
Copyright (c) 2017-2018 OmniOS Community Edition (OmniOSce) Association.
NOTICE: hma_vmx_init: CPU does not support VMX
vioif0: DL_ATTACH_REQ failed: DL_SYSERR (errno 22)
vioif0: DL_BIND_REQ failed: DL_OUTSTATE
vioif0: DL_PHYS_ADDR_REQ failed: DL_OUTSTATE
vioif0: DL_UNBIND_REQ failed: DL_OUTSTATE
Hostname: bloody

bloody console login: """
RECORDED_AFTER_USER = " root\nPassword:"
RECORDED_AFTER_PASSWORD = """
Last login: Sat Aug 25 15:30:56 2018 on console
Oct  5 12:35:34 bloody login: [ID 644210 auth.notice] ROOT LOGIN /dev/console
OmniOS 5.11     omnios-master-c6cc2b6b38       October 2018
bloody#"""
# The same site, _docs/info/openldap-client-auth.md (lines 204-207): a user
# logging in on an r151036 console.
RECORDED_R151036 = """client console login: rigby
Password:
OmniOS r151036  omnios-r151036-4a32ffb911       November 2020
rigby@client:~$"""


def test_recorded_omnios_boot_shows_the_kernel_and_the_login_prompt():
    assert console_login.kernel_version(RECORDED_BOOT) == "5.11 omnios-master-c6cc2b6b38"
    assert console_login.LOGIN_PROMPT_SHOWN.search(RECORDED_BOOT)
    assert console_login.login_state(RECORDED_BOOT) is console_login.Seen.LOGIN
    assert console_login.login_state(RECORDED_BOOT.rstrip()) is console_login.Seen.LOGIN
    assert not console_login.SEED_READY.search(RECORDED_BOOT)


def test_recorded_root_login_walks_through_the_states():
    Seen = console_login.Seen
    assert console_login.login_state(RECORDED_AFTER_USER) is Seen.PASSWORD
    assert console_login.login_state(RECORDED_AFTER_PASSWORD) is Seen.SHELL
    assert console_login.login_state(RECORDED_AFTER_PASSWORD + " ") is Seen.SHELL
    assert console_login.login_state(RECORDED_R151036) is Seen.SHELL
    # syslog's "bloody login: [ID ...]" and "Last login:" are not prompts.
    middle = RECORDED_AFTER_PASSWORD.rsplit("\n", 1)[0]
    assert console_login.login_state(middle) is Seen.NOTHING
    # A prompt stays the state when other output follows it.
    assert console_login.login_state(RECORDED_AFTER_USER + "\nNOTICE: vioif0: link up\n") \
        is Seen.PASSWORD


def test_refusals_win_over_later_prompts():
    # cmd/login/login.c: incorrectmsg[] = "Login incorrect\n", then the prompt again.
    text = "\nLogin incorrect\nbloody console login: "
    assert console_login.login_state(text) is console_login.Seen.INCORRECT
    text = "\nChoose a new password.\nNew Password: "
    assert console_login.login_state(text) is console_login.Seen.NEW_PASSWORD


def test_typed_commands_report_their_exit_status_and_not_their_echo():
    nonce = "0a1b2c3d"
    line = console_login.framed("false", nonce)
    assert console_login.exit_status(line, nonce) is None          # the echo of the input
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True).stdout
    assert console_login.exit_status(line + "\n" + out, nonce) == 1
    out = subprocess.run(["sh", "-c", console_login.framed("true", nonce)],
                         capture_output=True, text=True).stdout
    assert console_login.exit_status(out, nonce) == 0
    assert console_login.exit_status(out, "ffffffff") is None


# ------------------------------------------------------------ kernel reports


def c(fmt: str, *args) -> str:
    """A kernel printf format (%p printed as hex) filled in, as the console shows it."""
    return (fmt.replace("%p", "%x").replace("%lx", "%x").replace("%lld", "%d")
            .replace("\n\r", "\n") % args)


# The formats, verbatim from illumos-gate bb93684319:
PANIC = "\n\rpanic[cpu%d]/thread=%p: "                       # uts/common/os/panic.c:336
BAD_TRAP = ('BAD TRAP: type=%x (#%s %s) rp=%p addr=%p '       # uts/i86pc/os/trap.c:215
            'occurred in module "%s" due to %s')
SHOWREGS = ["%s: ", "#%s %s\n", "Bad %s fault at addr=0x%lx\n",   # trap.c showregs()
            "pid=%d, pc=0x%lx, sp=0x%lx, eflags=0x%lx\n"]
TRACE = "%016lx %s:%s+%lx (%s)\n"                             # uts/intel/os/archdep.c:994
DUMPING = "dumping to %s, offset %lld, content: %s\n"          # uts/common/os/dumpsubr.c:2730
KMEM = ["kernel memory allocator: ", "buffer modified after being freed\n"]  # os/kmem.c


def bad_trap_report() -> str:
    t = 0xfffffe00040c5c20
    head = c(PANIC, 0, t) + c(BAD_TRAP, 0xe, "pf", "Page fault", 0xfffffe00040c5970, 0,
                               "mmap_umem", "a NULL pointer dereference") + "\n\n"
    regs = (c(SHOWREGS[0], "sched") + c(SHOWREGS[1], "pf", "Page fault")
            + c(SHOWREGS[2], "kernel", 0) + c(SHOWREGS[3], 0, 0xfffffffff7a0c0d1,
                                               0xfffffe00040c5a68, 0x10246))
    trace = (c(TRACE, 0xfffffe00040c5aa0, "mmap_umem", "umem_mmap", 0x31, "")
             + c(TRACE, 0xfffffe00040c5b10, "genunix", "cdev_mmap", 0x2a, ""))
    return head + regs + "\n" + trace + "\n" + c(DUMPING, "/dev/zvol/dsk/rpool/dump", 65536,
                                                  "kernel") + " 100% done\n"


def test_bad_trap_is_one_fatal_report_to_the_dump_line():
    lines = ConsoleLines()
    w = Watcher(lines, patterns.TABLE)
    lines.feed("NOTICE: vioif0 link up, 1000 Mbps, full duplex\nWARNING: a warning\n")
    assert w.reports == [] and not w.fatal.is_set()
    lines.feed(bad_trap_report())
    (r,) = w.reports
    assert r.kind == "bad-trap" and r.fatal and w.fatal.is_set() and r.complete
    assert r.first_line.startswith("panic[cpu0]/thread=fffffe00040c5c20: BAD TRAP: type=e "
                                   "(#pf Page fault)")
    assert 'occurred in module "mmap_umem" due to a NULL pointer dereference' in r.first_line
    assert "mmap_umem:umem_mmap+31 ()" in r.text and "Bad kernel fault at addr=0x0" in r.text
    assert r.lines[-1].startswith("dumping to /dev/zvol/dsk/rpool/dump, offset 65536")
    assert " 100% done" not in r.text


@pytest.mark.parametrize("text, kind", [
    (c(PANIC, 1, 0xfffffe0004a1bc20) + c("deadman: timed out after %d seconds of clock "
                                         "activity", 50), "panic"),        # os/clock.c
    (c(PANIC, 0, 0xfffffe000f4c5c20) + c("assertion failed: %s, file: %s, line: %d",
                                         "x != NULL", "../../common/io/mmap_umem.c", 42),
     "panic"),                                                              # os/printf.c
    ("".join(KMEM) + "buffer=fffffe0165a3c000  bufctl=0  cache: kmem_alloc_4096", "kmem"),
])
def test_other_illumos_reports(text: str, kind: str):
    lines = ConsoleLines()
    w = Watcher(lines, patterns.TABLE)
    lines.feed(text + "\n" + c(PANIC, 0, 1) + "kernel heap corruption detected\n\n"
               "dump aborted: please record the above information!")
    assert [r.kind for r in w.reports] == [kind] and w.fatal.is_set()
    assert w.reports[0].complete


def test_each_family_reads_only_its_own_reports():
    lines = ConsoleLines()
    linux = Watcher(lines, LINUX_TABLE)
    illumos = Watcher(lines, patterns.TABLE)
    lines.feed(bad_trap_report())
    assert linux.reports == [] and len(illumos.reports) == 1
    lines.feed("Kernel panic - not syncing: Fatal exception\n"
               "---[ end Kernel panic - not syncing: Fatal exception ]---")
    assert [r.kind for r in linux.reports] == ["panic"] and linux.reports[0].complete
    assert len(illumos.reports) == 1


# ------------------------------------------------------------- in-guest steps


def test_driver_build_and_install_argv():
    d = "/var/tmp/mmap-harness/drv/mmap_umem"
    argv = steps.compile_argv("gcc", "mmap_umem")
    assert argv[0] == "gcc" and argv[-4:] == ["-c", "-o", f"{d}/mmap_umem.o",
                                               f"{d}/mmap_umem.c"]
    for flag in ["-m64", "-D_KERNEL", "-ffreestanding", "-fno-pic", "-fno-pie",
                 "-mcmodel=kernel", "-mno-red-zone", "-mno-mmx", "-mno-sse", "-D_SYSCALL32",
                 "-D_SYSCALL32_IMPL", "-D_ELF64", "-D_DDI_STRICT", "-O2", f"-I{d}"]:
        assert flag in argv
    assert steps.link_argv("mmap_umem") == ["ld", "-r", "-o", f"{d}/mmap_umem",
                                            f"{d}/mmap_umem.o"]
    assert steps.install_argvs("mmap_umem") == [
        ["cp", f"{d}/mmap_umem", "/usr/kernel/drv/amd64/mmap_umem"],
        ["cp", f"{d}/mmap_umem.conf", "/usr/kernel/drv/mmap_umem.conf"],
        ["add_drv", "-m", "* 0666 root sys", "mmap_umem"],
        ["devfsadm", "-i", "mmap_umem"]]
    # What the guest's shell is given: the permissions stay one argument.
    assert shlex.join(steps.install_argvs("mmap_umem")[2]) == \
        "add_drv -m '* 0666 root sys' mmap_umem"
    assert steps.remove_argvs("mmap_umem") == [
        ["rem_drv", "mmap_umem"],
        ["rm", "-f", "/usr/kernel/drv/amd64/mmap_umem", "/usr/kernel/drv/mmap_umem.conf",
         "/dev/mmap_umem"]]


@pytest.mark.parametrize("name", ["x; reboot", "../etc", "Mmap", "", "a" * 32])
def test_driver_names_are_checked(name: str):
    with pytest.raises(ConfigError, match="cannot be an illumos driver name"):
        steps.compile_argv("gcc", name)


def test_workloads_are_dynamic_in_both_models():
    argv = steps.workload_argv("gcc", "/w/pattern.c", "/w/pattern", False, ["/w/inc"])
    assert argv == ["gcc", "-m64", "-O2", "-Wall", "-I/w/inc", "-o", "/w/pattern",
                    "/w/pattern.c"]
    m32 = steps.workload_argv("/opt/gcc-14/bin/gcc", "/w/a.c", "/w/a-m32", True, [])
    assert m32[:2] == ["/opt/gcc-14/bin/gcc", "-m32"] and "-static" not in m32 + argv


def test_modinfo_lines_give_the_module_id():
    # usr/src/cmd/modload/modinfo.c print_info(): "%3d ", "%16lx ", "%6lx ",
    # "%3d " or "  - ", "  %d  ", then "%s (%s)" (-w: not cut at 43 characters).
    fmt = "%3d %16x %6x %3d   %d  %s (%s)"
    out = "\n".join([" Id         Loadaddr   Size Info Rev Module Name",
                     fmt % (1, 0xfffffffffb800000, 0x1e4b48, 0, 1, "unix", "?"),
                     "%3d %16x %6x   -   %d  %s (%s)" % (12, 0xfffffffff78b2000, 0x2d8, 1,
                                                          "mmap_umemx", "other"),
                     fmt % (231, 0xfffffffff7a0c000, 0xd18, 292, 1, "mmap_umem",
                            "mmap umem driver")])
    assert steps.parse_modinfo(out, "mmap_umem") == 231
    assert steps.parse_modinfo(out, "unix") == 1
    assert steps.parse_modinfo(out, "mmap_umemx") == 12
    assert steps.parse_modinfo(out, "mmap_remap") is None


def test_dev_link_target_is_the_drivers_minor_node():
    one = "/devices/pseudo/mmap_umem@0:mmap_umem\n"
    assert steps.pick_minor(one, "mmap_umem") == "/devices/pseudo/mmap_umem@0:mmap_umem"
    two = one + "/devices/pseudo/mmap_umem@0:ctl\n"
    assert steps.pick_minor(two, "mmap_umem") == "/devices/pseudo/mmap_umem@0:mmap_umem"
    assert steps.pick_minor("/devices/pseudo/x@0:a\n/devices/pseudo/x@0:b\n", "x") is None
    assert steps.pick_minor("", "x") is None
    argv = steps.minors_argv("mmap_umem")
    out = subprocess.run(argv, capture_output=True, text=True)   # no /devices here: nothing
    assert argv[:2] == ["sh", "-c"] and argv[-1] == "mmap_umem" and out.stdout == ""


def test_harness_illumos_modules_import_without_the_cli():
    out = subprocess.run([sys.executable, "-c", "import harness.illumos.steps, "
                          "harness.illumos.console_login, harness.illumos.seed"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.integration
def test_an_image_that_never_boots_is_a_boot_error_with_nothing_left(tmp_path: Path):
    """The illumos route through the whole pipeline, on a real QEMU: the
    user's image (here a blank one: no illumos image can be had) with this
    run's seed, TCG chosen and said why, the boot timeout scaled, a `boot`
    error with the console kept, QEMU reaped and the run's keys gone."""
    image = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    before = image.read_bytes()
    keys_before = set(Path("/tmp").glob("mmap-harness-illumos-guest-*"))
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--guest", "omnios-example",
                        "--image", str(image), "--timeout-scale", "0.02",
                        "--results", str(tmp_path / "results")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    (run_dir,) = [d for d in (tmp_path / "results").iterdir() if not d.is_symlink()]
    (guest,) = json.loads((run_dir / "results.json").read_text())["guests"]
    assert guest["status"] == "error" and guest["error_kind"] == "boot"
    assert "the kernel never started" in guest["error"]
    assert guest["accel"] == "tcg" and "no kernel to probe KVM" in guest["accel_reason"]
    cmdline = (run_dir / guest["dir"] / "qemu.cmdline").read_text()
    assert "snapshot=on" in cmdline and "seed.iso" in cmdline and "-kernel" not in cmdline
    assert (run_dir / guest["dir"] / "console.log").is_file()
    assert image.read_bytes() == before                      # never written
    assert set(Path("/tmp").glob("mmap-harness-illumos-guest-*")) == keys_before
    assert not subprocess.run(["pgrep", "-f", "mmap-harness-omnios-example-"],
                              capture_output=True).stdout
