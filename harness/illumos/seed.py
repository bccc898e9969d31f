"""The NoCloud seed: an ISO 9660 image labelled `cidata` holding meta-data
and user-data, which cloud-init reads at first boot (cloud-init's NoCloud
datasource, "Drive with labeled filesystem").

What the reader needs, from the sources it runs:
- illumos cloud-init (omniosorg/cloud-init, branch illumos, util.py
  find_devs_with_illumos) looks at /dev/dsk/c*t*d*p0, wants `fstyp` to say
  hsfs and `labelit -F hsfs` to print "Volume id: cidata"; it mounts the
  device read-only with `mount -F hsfs`.
- illumos hsfs uses Rock Ridge names when the image has them, else
  ISO 9660:1999, else Joliet (illumos-gate uts/common/fs/hsfs/
  hsfs_vfsops.c, hs_mountfs: "use rrip if available ... use joliet if
  available"); Linux's isofs, which cloud-init uses on Linux, prefers Rock
  Ridge too. Plain ISO 9660 names would be META_DAT.;1, so the seed carries
  both Rock Ridge (1.09) and Joliet names: `meta-data`, `user-data`, as
  `genisoimage -volid cidata -joliet -rock` makes them (cloud-init's NoCloud
  documentation).

The user data gives root the harness's client key (cc_ssh: top-level
ssh_authorized_keys go to root as they are when disable_root is false) and
the guest the pinned host key (cc_ssh ssh_keys, with every other host key
deleted), creates no default user (users: [], so no `omnios` user and no
rbac restart), and runs one runcmd line (guest_setup.seed_runcmd) that
makes sshd take root by key only, restarts it and prints a ready line on
the console. cloud-init's final stage runs after sshd started (its SMF
manifest orders it after svc:/network/ssh), which is why sshd is restarted
once the keys are in place.

The seed holds the guest's private host key: it is written 0600, atomically,
and belongs in the run's private temporary directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pycdlib

from ..errors import InfraError
from .guest_setup import seed_runcmd
from .keys import GuestKeys

VOLUME_ID = "cidata"
# ISO 9660 name, Rock Ridge name, Joliet name of each file.
FILES = {"meta-data": ("/METADATA.;1", "meta-data", "/meta-data"),
         "user-data": ("/USERDATA.;1", "user-data", "/user-data")}
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class SeedConfig:
    instance_id: str        # new per image and keys: cloud-init runs its per-instance modules
    hostname: str
    authorized_key: str     # the harness's client public key line
    host_private: str       # the guest's ed25519 host key, OpenSSH PEM
    host_public: str        # its public line

    @classmethod
    def for_guest(cls, guest_name: str, image: Path, keys: GuestKeys) -> SeedConfig:
        return cls(instance_id(image, keys.host_public), guest_name,
                   keys.client_public, keys.host_private, keys.host_public)


def instance_id(image: Path, host_public: str) -> str:
    """An instance id unique to the image file (path, size, mtime) and the
    run's host key: cloud-init treats a new id as a new instance."""
    st = image.stat()
    h = hashlib.sha256(f"{image.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0"
                       f"{host_public}".encode())
    return f"mmap-harness-{h.hexdigest()[:16]}"


def _check(cfg: SeedConfig) -> None:
    for what, value in (("instance id", cfg.instance_id), ("hostname", cfg.hostname)):
        if not _ID.match(value):
            raise InfraError(f"seed: {what} {value!r} must be lower-case letters, digits "
                             "and '-'")
    if "PRIVATE KEY-----" not in cfg.host_private:
        raise InfraError("seed: the host key given is not a private key")


def meta_data(cfg: SeedConfig) -> str:
    _check(cfg)
    return f"instance-id: {cfg.instance_id}\nlocal-hostname: {cfg.hostname}\n"


def user_data(cfg: SeedConfig) -> str:
    """#cloud-config in JSON form (JSON is YAML: every value is a quoted
    string, a boolean or a list, so nothing is left to YAML's guessing)."""
    _check(cfg)
    config = {
        "disable_root": False,
        "users": [],
        "ssh_authorized_keys": [cfg.authorized_key],
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": cfg.host_private,
                     "ed25519_public": cfg.host_public},
        "runcmd": [seed_runcmd(cfg.instance_id)],
    }
    return "#cloud-config\n" + json.dumps(config, indent=2) + "\n"


def write_seed_iso(path: Path, cfg: SeedConfig) -> Path:
    """Write the seed ISO to `path` (0600), atomically: a temporary file
    beside it, renamed into place."""
    contents = {"meta-data": meta_data(cfg).encode(), "user-data": user_data(cfg).encode()}
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=VOLUME_ID, joliet=3, rock_ridge="1.09")
    for name, data in contents.items():
        iso_path, rr_name, joliet_path = FILES[name]
        iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=rr_name,
                   joliet_path=joliet_path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".seed-", suffix=".iso", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:  # mkstemp made it 0600
                iso.write_fp(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise InfraError(f"cannot write the NoCloud seed {path}: {e.strerror or e}") from None
    finally:
        iso.close()
    return path
