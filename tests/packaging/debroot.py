"""A clean Debian 12 root for the package tests: built by debootstrap from this machine's own apt mirror, cached,
entered with chroot for apt, or booted with systemd-nspawn to run the installed unit under a real systemd.

Commands run in a private mount namespace (`unshare --mount`): the /proc, /dev and cache mounts they need vanish
with the last process in it, so nothing stays mounted on the host, not even when a test is killed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from tests.caches import cache_dir
from tests.packaging.conftest import ensure_apt

CACHE = cache_dir()
CODENAME = "bookworm"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}


def debian_mirror() -> str:
    """The URI this machine's apt uses for Debian 12's main archive (deb822 .sources or one-line .list files)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file() or path.suffix not in (".list", ".sources"):
            continue
        text = path.read_text(errors="replace")
        for line in text.splitlines() if path.suffix == ".list" else ():
            words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(words) >= 4 and words[0] == "deb" and words[2] == CODENAME and "main" in words[3:]:
                return words[1]
        for stanza in re.split(r"\n\s*\n", text) if path.suffix == ".sources" else ():
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if (
                "deb" in fields.get("Types", "").split()
                and CODENAME in fields.get("Suites", "").split()
                and "main" in fields.get("Components", "").split()
                and fields.get("Enabled", "yes") != "no"
            ):
                return fields["URIs"].split()[0]
    raise RuntimeError(f"no Debian {CODENAME} main entry in /etc/apt/sources.list*: no mirror for debootstrap")


def base_tarball() -> Path:
    """A minbase Debian 12 root as a tarball, made once per machine, mirror and architecture (about 2 minutes)."""
    mirror = debian_mirror()
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    tarball = CACHE / f"{CODENAME}-minbase-{arch}-{hashlib.sha256(mirror.encode()).hexdigest()[:10]}.tar.gz"
    if tarball.exists():
        return tarball
    ensure_apt("debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"debootstrap.{os.getpid()}"
    try:
        cmd = ["debootstrap", "--variant=minbase", CODENAME, str(work), mirror]
        subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(work), "-czf", str(partial), "."], check=True)
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


@contextmanager
def apt_turn() -> Iterator[None]:
    """Every root's apt uses the cached archives and lists, and apt gives up at once when another holds their lock:
    roots of test runs going on side by side on one machine take turns instead."""
    with open(CACHE / "apt.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def mounted_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in the host's mount namespace."""
    with open("/proc/self/mountinfo") as fh:
        return [line.split()[4] for line in fh if line.split()[4].startswith(str(path))]


@dataclass
class Root:
    """A Debian root directory. ``run()`` and ``popen()`` execute inside it, with /proc, /dev and apt's caches
    (the cached downloads and package lists, so a warm run downloads almost nothing)."""

    path: Path

    @classmethod
    def unpack(cls, path: Path) -> Root:
        subprocess.run(["tar", "-C", str(path), "-xzf", str(base_tarball())], check=True)  # device nodes, owners
        shutil.copy2("/etc/resolv.conf", path / "etc" / "resolv.conf")
        for cache in ("archives/partial", "lists/partial"):
            (CACHE / cache).mkdir(parents=True, exist_ok=True)
        return cls(path)

    def _argv(self, argv: list[str]) -> list[str]:
        r = shlex.quote(str(self.path))
        mounts = [
            f"mount -t proc proc {r}/proc",
            f"mount --rbind /dev {r}/dev",
            f"mount --bind {CACHE}/archives {r}/var/cache/apt/archives",
            f"mount --bind {CACHE}/lists {r}/var/lib/apt/lists",
        ]
        script = " && ".join(mounts) + f' && exec chroot {r} "$@"'
        # unshare execs sh, sh execs chroot, chroot execs the command: one PID all along.
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]

    def run(self, *argv: str, check: bool = True, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
        env = {**ENV, "DEBIAN_FRONTEND": "noninteractive"}
        with apt_turn() if argv[0] == "apt-get" else nullcontext():
            out = subprocess.run(self._argv(list(argv)), capture_output=True, text=True, env=env, timeout=timeout_s)
        if check and out.returncode != 0:
            raise AssertionError(f"in the root: {shlex.join(argv)} exited {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out

    def popen(self, *argv: str, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as fh:
            return subprocess.Popen(self._argv(list(argv)), stdout=fh, stderr=subprocess.STDOUT, env=ENV)

    def stage(self, *debs: Path) -> list[str]:
        """Copy .deb files into the root's /tmp; their paths inside the root."""
        for deb in debs:
            shutil.copy2(deb, self.path / "tmp" / deb.name)
        return [f"/tmp/{deb.name}" for deb in debs]

    def install(self, *packages: str | Path) -> None:
        """apt-get install packages or .deb files, dependencies from Debian (Recommends left out: the tests that
        need hpcc and Open MPI ask for them). A changed conffile is kept, as a user's apt does by default."""
        names = [self.stage(p)[0] if isinstance(p, Path) else p for p in packages]
        opts = ["-y", "-q", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold"]
        self.run("apt-get", "install", *opts, *names)


@dataclass
class Booted:
    """A Root booted with systemd-nspawn (host network, so the host's loopback broker is reachable)."""

    init_pid: int  # the container's systemd, as the host sees it

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["nsenter", "-t", str(self.init_pid), "-a", *argv]
        out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)
        if check and out.returncode != 0:
            raise AssertionError(
                f"in the container: {shlex.join(argv)} exited {out.returncode}\n{out.stdout}{out.stderr}"
            )
        return out

    def show(self, unit: str, prop: str) -> str:
        return self.run("systemctl", "show", "-p", prop, "--value", unit).stdout.strip()

    def wait(self, what: str, cond: object, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if cond():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@contextmanager
def booted(root: Root, log: Path) -> Iterator[Booted]:
    """Boot ``root`` (which must have systemd installed); power it off afterwards, whatever happened."""
    ensure_apt("systemd-container")
    cmd = ["systemd-nspawn", "-q", "-D", str(root.path), "--keep-unit", "--register=no", "--console=passive", "-b"]
    with open(log, "wb") as fh:
        nspawn = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=ENV)
    init_pid = 0
    try:
        deadline = time.monotonic() + 30
        while not init_pid and time.monotonic() < deadline and nspawn.poll() is None:
            children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children").read_text().split()
            init_pid = int(children[0]) if children else 0
            time.sleep(0.1)
        assert init_pid, f"systemd-nspawn did not start a container: {log.read_text(errors='replace')}"
        box = Booted(init_pid)
        box.wait("the container's systemd", lambda: box.run("systemctl", "is-system-running", check=False).stdout)
        box.run("systemctl", "is-system-running", "--wait", check=False)
        yield box
    finally:
        nspawn.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
        try:
            nspawn.wait(60)
        except subprocess.TimeoutExpired:
            if init_pid:
                os.kill(init_pid, signal.SIGKILL)  # ends every process of the container's PID namespace
            nspawn.kill()
            nspawn.wait()
