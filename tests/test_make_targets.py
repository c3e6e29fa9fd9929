"""`make test` on a fresh machine (issue 26 item 1): the SLURM packages its cluster tests need are
installed when missing (root + apt-get), otherwise it stops at once with one line naming them and
`make test-fast`. Simulated with a PATH of stand-ins (`id`, `apt-get`, the SLURM programs), never
by uninstalling anything."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

MAKE = shutil.which("make")
PACKAGES = "slurmctld slurmd slurm-client munge"
PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def _bin(tmp_path: Path, uid: int, apt: bool = False, programs=()) -> Path:
    b = tmp_path / "bin"
    b.mkdir()
    (b / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    if apt:  # records its arguments instead of installing
        (b / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "apt.log"}\n')
    for p in programs:
        (b / p).write_text("#!/bin/sh\n")
    for f in b.iterdir():
        f.chmod(0o755)
    return b


def _make(path: Path, target: str = "slurm-packages") -> subprocess.CompletedProcess:
    return subprocess.run([MAKE, "-s", "-C", str(ROOT), target], env={"PATH": str(path)}, capture_output=True,
                          text=True, timeout=60)


def _error_line(r: subprocess.CompletedProcess) -> str:
    lines = [x for x in r.stderr.splitlines() if not x.startswith("make")]  # make's own "*** Error 2"
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_without_root_make_test_stops_before_anything_naming_packages_and_test_fast(tmp_path):
    r = _make(_bin(tmp_path, 1000), "test")  # `test` first checks, then sets up the venv: nothing ran
    line = _error_line(r)
    assert r.returncode == 2 and r.stdout == ""
    assert "need root" in line and PACKAGES in line and "make test-fast" in line and "missing: munged" in line


def test_root_without_apt_get_says_what_to_install(tmp_path):
    r = _make(_bin(tmp_path, 0, programs=PROGRAMS[:4]))
    line = _error_line(r)
    assert r.returncode == 2 and "missing: sbatch srun squeue sinfo scontrol scancel" in line
    assert PACKAGES in line and "make test-fast" in line and not (tmp_path / "apt.log").exists()


def test_root_with_apt_get_installs_the_missing_packages(tmp_path):
    r = _make(_bin(tmp_path, 0, apt=True))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "apt.log").read_text().splitlines() == ["update -qq", f"install -y -qq {PACKAGES}"]
    assert f"installing {PACKAGES}" in r.stdout


def test_nothing_is_installed_when_every_program_is_there(tmp_path):
    r = _make(_bin(tmp_path, 0, apt=True, programs=PROGRAMS))
    assert r.returncode == 0 and r.stdout == r.stderr == ""
    assert not (tmp_path / "apt.log").exists()
