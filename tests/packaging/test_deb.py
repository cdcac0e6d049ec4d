"""The .deb files, end to end: `make deb`, lintian, the installed unit, and the agent package installed with apt
into a clean Debian 12 root, where the installed agent runs with Debian's python3 and paho-mqtt 1.6.1.

The clean root comes from `debootstrap --variant=minbase bookworm`, from the mirror this machine's apt uses. It is
cached as a tarball under /var/cache/picluster-test/ together with apt's downloads, so only the first run on a
machine downloads it (about 2 minutes). Commands in the root run in a private mount namespace (`unshare -m`): its
/proc, /dev and cache mounts vanish with the last process in it, so nothing stays mounted on the host, not even
after a crash; the fixture still checks that nothing is left.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeagent import __version__
from tests.conftest import Mosquitto
from tests.integration.helpers import Watcher
from tests.packaging.conftest import REPO, ensure_apt
from tests.packaging.test_unit import verifiable_copy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: debootstrap, chroot, mount namespaces, apt"),
]

CACHE = Path("/var/cache/picluster-test")
CODENAME = "bookworm"
BUILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}
UPGRADE_VERSION = f"{__version__}+upgradetest1"


def debian_mirror() -> str:
    """The URI this machine's apt uses for Debian 12's main archive (deb822 .sources or one-line .list files)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file() or path.suffix not in (".list", ".sources"):
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".list":
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
                if len(words) >= 4 and words[0] == "deb" and words[2] == CODENAME and "main" in words[3:]:
                    return words[1]
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if (
                "deb" in fields.get("Types", "").split()
                and CODENAME in fields.get("Suites", "").split()
                and "main" in fields.get("Components", "").split()
                and fields.get("Enabled", "yes") != "no"
            ):
                return fields["URIs"].split()[0]
    pytest.fail(f"no Debian {CODENAME} main entry in /etc/apt/sources.list*: cannot choose a mirror for debootstrap")


def base_tarball() -> Path:
    """A minbase Debian 12 root as a tarball, built once per machine, mirror and architecture."""
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
        subprocess.run(cmd, check=True, env=BUILD_ENV, stdout=subprocess.DEVNULL)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(work), "-czf", str(partial), "."], check=True)
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


@dataclass
class Root:
    """A Debian root directory; ``run()`` and ``popen()`` execute inside it with /proc, /dev and apt's caches."""

    path: Path

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
        env = {**BUILD_ENV, "DEBIAN_FRONTEND": "noninteractive"}
        out = subprocess.run(self._argv(list(argv)), capture_output=True, text=True, env=env, timeout=timeout_s)
        if check and out.returncode != 0:
            raise AssertionError(f"in the root: {shlex.join(argv)} exited {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out

    def popen(self, *argv: str, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as fh:
            return subprocess.Popen(self._argv(list(argv)), stdout=fh, stderr=subprocess.STDOUT, env=BUILD_ENV)

    def stage(self, *debs: Path) -> list[str]:
        """Copy .deb files into the root's /tmp; their paths inside the root."""
        for deb in debs:
            shutil.copy2(deb, self.path / "tmp" / deb.name)
        return [f"/tmp/{deb.name}" for deb in debs]

    def install(self, *debs: Path) -> None:
        """apt-get install the .deb files, dependencies from Debian (Recommends left out: hpcc and Open MPI are
        large, and the tests run no job here). A changed conffile is kept, as a user's apt would by default."""
        opts = ["-y", "-q", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold"]
        self.run("apt-get", "install", *opts, *self.stage(*debs))


def _mounted_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        return [line.split()[4] for line in fh if line.split()[4].startswith(str(path))]


@pytest.fixture(scope="module")
def debs() -> dict[str, Path]:
    """`make deb` (it runs lintian with --fail-on error,warning itself); the three packages by name."""
    ensure_apt("make")
    started = time.monotonic()
    out = subprocess.run(["make", "deb"], cwd=REPO, capture_output=True, text=True, env=BUILD_ENV, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    print(f"make deb: {time.monotonic() - started:.0f} s")
    found = {p.name.split("_")[0]: p for p in (REPO / "build" / "debs").glob(f"*_{__version__}_all.deb")}
    assert set(found) == {"picluster-agent", "picluster-controller", "python3-picluster"}, found
    return found


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, debs: dict[str, Path]) -> Iterator[Root]:
    """A clean Debian 12 root with picluster-agent installed through apt."""
    started = time.monotonic()
    tarball = base_tarball()
    print(f"base root: {time.monotonic() - started:.0f} s ({tarball})")
    for cache in ("archives/partial", "lists/partial"):
        (CACHE / cache).mkdir(parents=True, exist_ok=True)
    path = tmp_path_factory.mktemp("debroot")
    try:
        subprocess.run(["tar", "-C", str(path), "-xzf", str(tarball)], check=True)  # device nodes and owners too
        shutil.copy2("/etc/resolv.conf", path / "etc" / "resolv.conf")
        root = Root(path)
        root.run("apt-get", "update", "-q")
        pkgs = (debs["python3-picluster"], debs["picluster-agent"])
        # What a user's `apt install ./picluster-agent_*.deb` pulls in, Recommends included, resolves in Debian 12.
        plan = root.run("apt-get", "install", "-s", "-q", *root.stage(*pkgs)).stdout
        for recommended in ("hpcc", "openmpi-bin", "libopenblas0"):
            assert re.search(rf"^Inst {recommended} ", plan, re.M), plan
        root.install(*pkgs)
        print(f"root with the agent installed: {time.monotonic() - started:.0f} s")
        yield root
    finally:
        left = _mounted_under(path)
        shutil.rmtree(path, ignore_errors=True)
        assert not left, f"still mounted: {left}"


def test_lintian_reports_no_errors_and_no_warnings(debs: dict[str, Path]) -> None:
    changes = next((REPO / "build" / "debs").glob(f"picluster_{__version__}_*.changes"))
    out = subprocess.run(["lintian", str(changes)], capture_output=True, text=True, env=BUILD_ENV)
    tags = [line for line in out.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert out.returncode == 0 and not tags, out.stdout + out.stderr


def test_systemd_accepts_the_installed_unit(debs: dict[str, Path], tmp_path: Path) -> None:
    ensure_apt("systemd", "man-db")
    tree = tmp_path / "pkg"
    subprocess.run(["dpkg-deb", "-x", str(debs["picluster-agent"]), str(tree)], check=True)
    unit = tree / "lib" / "systemd" / "system" / "picluster-agent.service"
    assert unit.read_text() == (REPO / "systemd" / "picluster-agent.service").read_text()
    man = tmp_path / "man-src"
    man.mkdir()
    subprocess.run(["sh", "-c", f"gzip -dc {tree}/usr/share/man/man8/picluster-agent.8.gz > {man}/picluster-agent.8"])
    copy, env = verifiable_copy(unit, man, tmp_path)
    out = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_install_creates_the_user_state_dir_conffile_and_enables_the_unit(root: Root) -> None:
    p = root.path
    assert "picluster:" in (p / "etc" / "passwd").read_text()
    st = (p / "var" / "lib" / "picluster").stat()
    assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)) == (0, 0, "0o755")
    assert (p / "etc" / "systemd" / "system" / "multi-user.target.wants" / "picluster-agent.service").is_symlink()
    status = root.run("dpkg-query", "-W", "-f=${Conffiles}", "picluster-agent").stdout
    assert "/etc/picluster/agent.toml" in status
    paho = root.run("python3", "-c", "import paho.mqtt; print(paho.mqtt.__version__)").stdout.strip()
    assert paho == "1.6.1"


def test_installed_agent_publishes_facts_and_telemetry(root: Root, broker: Mosquitto, cluster: str) -> None:
    argv = ["picluster-agent", "run", "--sim", "--node-id", "debroot", "--broker", broker.url, "--cluster", cluster]
    log = root.path.parent / "agent.log"
    proc = root.popen(*argv, log=log)
    try:
        with Watcher(broker.url, cluster) as w:
            w.wait("debroot online with facts", lambda: w.online("debroot"), timeout_s=60)
            start = w.telemetry_count("debroot")
            w.wait("3 telemetry ticks", lambda: w.telemetry_count("debroot") >= start + 3, timeout_s=10)
        facts = w.fleet.nodes["debroot"].facts
        assert facts is not None and facts.sim and facts.agent_version == __version__
    finally:
        proc.send_signal(signal.SIGTERM)  # by PID: the agent itself (see Root._argv)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    output = log.read_text(errors="replace")
    assert code == 0, output
    assert "Traceback" not in output
    assert "event=mqtt_connected" in output


def test_upgrade_keeps_the_changed_conffile_and_purge_cleans_up(
    root: Root, debs: dict[str, Path], tmp_path: Path
) -> None:
    v2 = tmp_path / "v2"
    cmd = [str(REPO / "packaging" / "build-deb.sh"), "--version", UPGRADE_VERSION, "--out", str(v2), "--no-lintian"]
    subprocess.run(cmd, check=True, env=BUILD_ENV, capture_output=True, timeout=900)
    conf = root.path / "etc" / "picluster" / "agent.toml"
    changed = conf.read_text().replace('# broker = "mqtt://localhost:1883"', 'broker = "mqtt://broker.lan:1883"')
    assert changed != conf.read_text()
    conf.write_text(changed)

    root.install(*sorted(v2.glob("*.deb")))
    versions = root.run("dpkg-query", "-W", "-f=${Package} ${Version}\\n", "picluster-agent", "python3-picluster")
    assert versions.stdout.split("\n")[:2] == [
        f"picluster-agent {UPGRADE_VERSION}",
        f"python3-picluster {UPGRADE_VERSION}",
    ]
    assert conf.read_text() == changed
    assert root.run("picluster-agent", "--version").stdout.strip() == f"picluster-agent {__version__}"

    root.run("apt-get", "purge", "-y", "-q", "picluster-agent")
    assert not (root.path / "var" / "lib" / "picluster").exists()
    assert not (
        root.path / "etc" / "systemd" / "system" / "multi-user.target.wants" / "picluster-agent.service"
    ).exists()
    assert not conf.exists()
    assert "picluster:" in (root.path / "etc" / "passwd").read_text()  # system users stay (Debian practice)
