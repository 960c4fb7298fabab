"""scripts/slurm-local.sh runs as root: a folder, pid file or symlink that someone else planted must not make
it signal a process of theirs, write outside its folder or expose the munge key (which forges any uid).
The refusals need only bash and root; bringing a cluster up also needs SLURM installed."""
from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="scripts/slurm-local.sh runs as root (as the attacks target)")

SCRIPT = REPO / "scripts" / "slurm-local.sh"
MARK = "# written by scripts/slurm-local.sh\n"  # what makes `up` take a non-empty folder for its own
PID_FILES = ("slurmd.pid", "slurmctld.pid", "munged.pid", "munge/munged.pid")
OLD_DEFAULT = Path("/tmp/c3exp-slurm")  # the folder the script used when given none
NOBODY = pwd.getpwnam("nobody")


def exported(stdout: str) -> dict[str, str]:
    """The variables of the `export SLURM_CONF=... C3EXP_SLURM_DIR=...` line that `up` prints."""
    words = shlex.split(stdout.strip().splitlines()[-1])
    assert words[0] == "export", stdout
    return dict(word.split("=", 1) for word in words[1:])


def skip_without_slurm() -> None:
    missing = [program for program in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(program) is None]
    if missing:
        pytest.skip(f"SLURM is not installed here ({', '.join(missing)} not found): "
                    "apt-get install slurmctld slurmd slurm-client munge (.ci/run does)")


def script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "C3EXP_SLURM_DIR"} | (env or {})
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything under root, symlinks not followed: type and mode, owner, times, content or target."""
    def entry(path: Path) -> tuple:
        st = path.lstat()
        body = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else None
        return st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, body
    return {str(p): entry(p) for p in [root, *root.rglob("*")]}


def refused(done: subprocess.CompletedProcess) -> bool:
    return done.returncode == 2 and len(done.stderr.splitlines()) == 1 and done.stderr.startswith("slurm-local:")


@pytest.fixture
def sandbox() -> Iterator[Path]:
    """A folder in /tmp that every user can enter, as the script requires of the folders above its own."""
    path = Path(tempfile.mkdtemp(prefix="c3exp-slurm-test."))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def victim(sandbox: Path) -> Iterator[subprocess.Popen]:
    """Someone else's process whose command line imitates slurmd's and munged's for the folder sandbox/cluster:
    only what it really runs (/proc/PID/exe) tells it apart."""
    cluster = sandbox / "cluster"
    process = subprocess.Popen(["slurmd", "-c", "import time; time.sleep(600)", "-f", f"{cluster}/slurm.conf",
                                f"--pid-file={cluster}/munge/munged.pid"], executable=sys.executable)
    yield process
    process.kill()
    process.wait()


def plant(folder: Path, pid: int, owner: int = 0) -> None:
    """A folder that claims to hold a cluster of the script, every pid file naming pid."""
    (folder / "munge").mkdir(parents=True)
    (folder / "slurm.conf").write_text(MARK)
    for name in PID_FILES:
        (folder / name).write_text(f"{pid}\n")
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, owner, -1)


def other_users_folder(sandbox: Path, pid: int) -> Path:
    plant(sandbox / "cluster", pid, owner=NOBODY.pw_uid)
    return sandbox / "cluster"


def symlink_to_elsewhere(sandbox: Path, pid: int) -> Path:
    plant(sandbox / "elsewhere", pid)
    (sandbox / "cluster").symlink_to(sandbox / "elsewhere")
    return sandbox / "cluster"


def writable_by(mode: int) -> Callable[[Path, int], Path]:
    def setup(sandbox: Path, pid: int) -> Path:
        plant(sandbox / "cluster", pid)
        (sandbox / "cluster").chmod(mode)
        return sandbox / "cluster"
    return setup


def under_other_users_folder(sandbox: Path, pid: int) -> Path:
    """Root's own folder, but inside one that another user can empty and refill at will."""
    plant(sandbox / "theirs" / "cluster", pid)
    os.chown(sandbox / "theirs", NOBODY.pw_uid, -1)
    return sandbox / "theirs" / "cluster"


ATTACKS = {"other user's": other_users_folder, "symlink": symlink_to_elsewhere, "group-writable": writable_by(0o775),
           "world-writable sticky": writable_by(0o1777), "inside other user's": under_other_users_folder}


@pytest.mark.parametrize("command", ["up", "down"])
@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_planted_folder_is_refused_before_anything_is_signalled_or_written(sandbox, victim, attack, command):
    folder = attack(sandbox, victim.pid)
    before = snapshot(sandbox)
    done = script(command, str(folder))
    assert refused(done), (done.returncode, done.stderr)
    assert victim.poll() is None, "the script killed the process of a planted pid file"
    assert snapshot(sandbox) == before


def test_down_signals_only_the_daemons_it_started(sandbox, victim):
    """A folder that passes every check, but whose pid files name a process that is no daemon of it."""
    plant(sandbox / "cluster", victim.pid)
    before = snapshot(sandbox / "cluster")
    done = script("down", str(sandbox / "cluster"))
    assert done.returncode == 0, done.stderr
    assert victim.poll() is None, "down killed a process that only looks like slurmd"
    assert snapshot(sandbox / "cluster") == before  # not its daemons' pid files: left as they are


@pytest.fixture
def planted_default(sandbox: Path, victim: subprocess.Popen) -> Iterator[Path]:
    """/tmp/c3exp-slurm as another user would plant it: a symlink to a folder of theirs with pid files."""
    if OLD_DEFAULT.exists() or OLD_DEFAULT.is_symlink():
        pytest.skip(f"{OLD_DEFAULT} exists here already: not ours to plant over")
    plant(sandbox / "theirs", victim.pid, owner=NOBODY.pw_uid)
    OLD_DEFAULT.symlink_to(sandbox / "theirs")
    yield sandbox / "theirs"
    OLD_DEFAULT.unlink()


def test_down_has_no_default_folder_to_plant(planted_default, victim):
    before = snapshot(planted_default)
    done = script("down")
    assert done.returncode == 2 and done.stderr.startswith("usage:"), done.stderr
    assert victim.poll() is None
    assert snapshot(planted_default) == before


def test_a_missing_folder_is_made_only_where_nobody_else_can_swap_it(sandbox):
    os.chown(sandbox, NOBODY.pw_uid, -1)
    done = script("up", str(sandbox / "cluster"))
    assert refused(done), done.stderr
    assert not (sandbox / "cluster").exists()


class KeyWatcher(threading.Thread):
    """Looks at the munge key and its folder, as often as it can, while `up` writes them under root."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.done, self.seen = root, threading.Event(), set()

    def run(self) -> None:
        while not self.done.is_set():
            for path in self.root.glob("c3exp-slurm.*/munge*"):
                for p in [path, *(path.iterdir() if path.is_dir() else [])]:
                    try:
                        st = p.lstat()
                    except FileNotFoundError:
                        continue
                    self.seen.add((p.relative_to(self.root).as_posix().partition("/")[2], st.st_mode & 0o7777, st.st_uid))

    def __enter__(self) -> KeyWatcher:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()


def daemon_pids(folder: Path) -> list[int]:
    return [int((folder / name).read_text()) for name in ("munge/munged.pid", "slurmctld.pid", "slurmd.pid")]


@pytest.mark.slow
@pytest.mark.slurm
def test_up_without_a_folder_makes_a_fresh_private_one_and_down_stops_it(sandbox, planted_default, victim):
    skip_without_slurm()
    before = snapshot(planted_default)
    with KeyWatcher(sandbox) as watcher:
        up = script("up", env={"TMPDIR": str(sandbox)})  # mktemp's folder, here to be watched and removed
    assert up.returncode == 0, up.stderr
    folder = Path(exported(up.stdout)["C3EXP_SLURM_DIR"])
    assert exported(up.stdout)["SLURM_CONF"] == f"{folder}/slurm.conf" and folder.parent == sandbox
    try:
        assert snapshot(planted_default) == before and victim.poll() is None  # the old default is not looked at
        key, munge = folder / "munge" / "munge.key", folder / "munge"
        assert (munge.stat().st_mode & 0o7777, munge.stat().st_uid) == (0o700, 0)
        assert (key.stat().st_mode & 0o7777, key.stat().st_uid) == (0o400, 0)
        seen = {name: {(mode, uid) for n, mode, uid in watcher.seen if n == name} for name in ("munge", "munge/munge.key")}
        assert seen["munge"] == {(0o700, 0)}, "the key's folder was once open to others"
        assert seen["munge/munge.key"] and not [mode for mode, _ in seen["munge/munge.key"] if mode & 0o077]
        assert "--force" not in (Path("/proc") / str(daemon_pids(folder)[0]) / "cmdline").read_bytes().split(b"\0")
    finally:
        pids = daemon_pids(folder)
        down = script("down", str(folder))
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "down left daemons running"
