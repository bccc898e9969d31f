"""Unit tests: strict decoding of definitions and specs."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import drivers, guests
from harness.config import decode
from harness.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    size: int


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    tags: list[str] = field(default_factory=list)


def test_decode_builds_nested_dataclasses():
    got = decode(Outer, {"name": "a", "inner": {"size": 3}, "tags": ["x"]}, "t")
    assert got == Outer("a", Inner(3), ["x"])


@pytest.mark.parametrize("data, words", [
    ({"name": "a", "inner": {"size": 3}, "colour": 1}, "unknown key(s) colour"),
    ({"name": "a"}, "missing key 'inner'"),
    ({"name": "a", "inner": {"size": "3"}}, "t.inner.size: expected int"),
    ({"name": "a", "inner": {"size": True}}, "expected int, got True"),
    ({"name": "a", "inner": {"size": 1}, "tags": "x"}, "t.tags: expected a list"),
])
def test_decode_rejects_bad_input_by_name(data, words):
    with pytest.raises(ConfigError) as e:
        decode(Outer, data, "t")
    assert words in str(e.value)


def test_shipped_definitions_load_and_bookworm_is_default():
    defs = guests.all_definitions()
    assert {"debian-bookworm", "debian-trixie"} <= set(defs)
    assert guests.default_guest().name == "debian-bookworm"
    assert defs["debian-trixie"].debian.suite == "trixie"


def test_unknown_guest_lists_the_known_ones():
    with pytest.raises(ConfigError) as e:
        guests.find("debian-potato")
    assert "unknown guest 'debian-potato'" in str(e.value)
    assert "debian-bookworm" in e.value.hint


def test_guest_name_must_match_file(tmp_path: Path):
    text = (guests.GUEST_DIR / "debian-bookworm.toml").read_text()
    (tmp_path / "other.toml").write_text(text)
    with pytest.raises(ConfigError, match="must match the file name"):
        guests.load_definition(tmp_path / "other.toml")


def test_guest_package_names_are_checked(tmp_path: Path):
    text = (guests.GUEST_DIR / "debian-bookworm.toml").read_text()
    bad = text.replace('compiler_package = "gcc"', 'compiler_package = "gcc; rm -rf /"')
    (tmp_path / "debian-bookworm.toml").write_text(bad)
    with pytest.raises(ConfigError, match="not a Debian package name"):
        guests.load_definition(tmp_path / "debian-bookworm.toml")


def test_a_guest_s_architecture_is_one_the_harness_boots(tmp_path: Path):
    assert guests.find("debian-bookworm").debian.arch == "amd64"     # the default
    assert guests.find("debian-bookworm-686").debian.arch == "i386"
    text = (guests.GUEST_DIR / "debian-bookworm-686.toml").read_text()
    (tmp_path / "debian-bookworm-686.toml").write_text(text.replace('"i386"', '"arm64"'))
    with pytest.raises(ConfigError, match="debian.arch 'arm64' is not one the harness boots") as e:
        guests.load_definition(tmp_path / "debian-bookworm-686.toml")
    assert e.value.hint == "choose one of: amd64, i386"


def test_shipped_driver_specs_validate():
    specs = drivers.all_specs()
    assert specs and all(s.workloads for s in specs)


@pytest.mark.parametrize("change, words", [
    ({"name": "bad-name"}, "not a short lower-case C identifier"),
    ({"description": 'x"); evil(); ("'}, "description must be"),
    ({"order": 11}, "order must be"),
    ({"template": "nope"}, "unknown template"),
    ({"workloads": ["../etc/passwd"]}, "no workload"),
])
def test_driver_spec_validation(change, words):
    spec = drivers.DriverSpec(name="ok", template="remap", description="fine",
                              order=2, workloads=["pattern"])
    spec = drivers.DriverSpec(**{**spec.__dict__, **change})
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        drivers.validate(spec, "spec")
