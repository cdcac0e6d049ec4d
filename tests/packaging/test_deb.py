"""The .deb files, end to end: `make deb` and lintian, the installed unit, then picluster-agent's one .deb installed
with apt into a clean Debian 12 root (tests/packaging/debroot.py), where the installed agent runs with Debian's
python3 and paho-mqtt 1.6.1, then runs again as the real service under systemd (booted with systemd-nspawn), gets
piclusterctl next to it, and is upgraded and purged. The tests on that root share it and run in file order. A
second copy of the root is an operator's laptop: python3-picluster and picluster-controller, no agent.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nodeagent.protocol import OFFLINE
from nodeagent.protocol.version import __version__
from tests.conftest import Mosquitto, ctl
from tests.integration.helpers import Watcher
from tests.packaging.conftest import REPO, ensure_apt
from tests.packaging.debroot import ENV, Root, booted, mounted_under
from tests.packaging.test_unit import verifiable_copy
from tests.signing import make_operator_key

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: debootstrap, chroot, mount namespaces, apt"),
]

UPGRADE_VERSION = f"{__version__}+upgradetest1"
UNIT = "picluster-agent.service"
ENABLED_LINK = Path("etc/systemd/system/multi-user.target.wants") / UNIT
UNIT_FILE = Path("lib/systemd/system") / UNIT
MODULES = Path("usr/lib/python3/dist-packages/nodeagent")


@pytest.fixture(scope="module")
def debs() -> dict[str, Path]:
    """`make deb`, which fails on any lintian error or warning; the three packages by name."""
    ensure_apt("make")
    started = time.monotonic()
    out = subprocess.run(["make", "deb"], cwd=REPO, capture_output=True, text=True, env=ENV, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    print(f"\nmake deb: {time.monotonic() - started:.0f} s")
    found = {p.name.split("_")[0]: p for p in (REPO / "build" / "debs").glob(f"*_{__version__}_all.deb")}
    assert set(found) == {"picluster-agent", "picluster-controller", "python3-picluster"}, found
    return found


@contextmanager
def fresh_root(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Root]:
    """A copy of the cached Debian 12 root with fresh package lists; removed afterwards, with nothing left mounted."""
    path = tmp_path_factory.mktemp(name)
    try:
        root = Root.unpack(path)
        root.run("apt-get", "update", "-q")
        yield root
    finally:
        left = mounted_under(path)
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
        assert not left, f"still mounted: {left}"


def installed_packages(root: Root) -> set[str]:
    out = root.run("dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Package}\\n").stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("ii ")}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, debs: dict[str, Path]) -> Iterator[Root]:
    """A clean Debian 12 root with picluster-agent installed by apt from its one .deb file."""
    started = time.monotonic()
    with fresh_root(tmp_path_factory, "debroot") as root:
        print(f"base root: {time.monotonic() - started:.0f} s")
        # What the documented `apt install ./picluster-agent_*.deb` pulls in, Recommends included, resolves in
        # Debian 12 alone, and python3-picluster is not among it: the agent ships the modules itself.
        plan = root.run("apt-get", "install", "-s", "-q", *root.stage(debs["picluster-agent"])).stdout
        for recommended in ("hpcc", "openmpi-bin", "libopenblas0"):
            assert re.search(rf"^Inst {recommended} ", plan, re.M), plan
        assert not re.search(r"^Inst python3-picluster ", plan, re.M), plan
        root.install(debs["picluster-agent"])
        print(f"root with the agent installed: {time.monotonic() - started:.0f} s")
        yield root


def test_lintian_reports_no_errors_and_no_warnings(debs: dict[str, Path]) -> None:
    changes = next((REPO / "build" / "debs").glob(f"picluster_{__version__}_*.changes"))
    out = subprocess.run(["lintian", str(changes)], capture_output=True, text=True, env=ENV)
    tags = [line for line in out.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert out.returncode == 0 and not tags, out.stdout + out.stderr


def test_systemd_accepts_the_installed_unit(debs: dict[str, Path], tmp_path: Path) -> None:
    ensure_apt("systemd", "man-db")
    tree = tmp_path / "pkg"
    subprocess.run(["dpkg-deb", "-x", str(debs["picluster-agent"]), str(tree)], check=True)
    unit = tree / "lib" / "systemd" / "system" / UNIT
    assert unit.read_text() == (REPO / "systemd" / UNIT).read_text()
    man = tmp_path / "man-src"
    man.mkdir()
    page = subprocess.run(["gzip", "-dc", str(tree / "usr/share/man/man8/picluster-agent.8.gz")], capture_output=True)
    (man / "picluster-agent.8").write_bytes(page.stdout)
    copy, env = verifiable_copy(unit, man, tmp_path)
    out = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_install_creates_the_user_state_dir_conffile_and_enables_the_unit(root: Root) -> None:
    p = root.path
    assert re.search(r"^picluster:x:\d+:\d+:", (p / "etc" / "passwd").read_text(), re.M)
    # dialout exists in every Debian root (base-passwd); gpio and i2c only on a Pi, so they are skipped here.
    group = (p / "etc" / "group").read_text()
    assert re.search(r"^dialout:x:\d+:(.*,)?picluster(,|$)", group, re.M), "picluster is not in dialout"
    assert not re.search(r"^(gpio|i2c):", group, re.M)
    st = (p / "var" / "lib" / "picluster").stat()
    assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)) == (0, 0, "0o755")
    keys = (p / "etc" / "picluster" / "operators.d").stat()  # root's alone to write: whoever can, commands the node
    assert (keys.st_uid, keys.st_gid, oct(keys.st_mode & 0o7777)) == (0, 0, "0o755")
    assert (p / ENABLED_LINK).is_symlink()
    assert "/etc/picluster/agent.toml" in root.run("dpkg-query", "-W", "-f=${Conffiles}", "picluster-agent").stdout
    # One file installed everything: the modules come from picluster-agent itself.
    pkgs = installed_packages(root)
    assert "picluster-agent" in pkgs and "python3-picluster" not in pkgs
    assert root.run("dpkg", "-S", f"/{MODULES}/__init__.py").stdout.startswith("picluster-agent: ")
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
    assert code == 0 and "Traceback" not in output and "event=mqtt_connected" in output, output


def _connects(broker: Mosquitto, client_id: str) -> int:
    text = (broker.workdir / "mosquitto.log").read_text(errors="replace")
    return len(re.findall(rf"New client connected from .* as {re.escape(client_id)} ", text))


def test_the_service_under_systemd(
    root: Root, broker: Mosquitto, cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The installed unit, hardening and all, under a real systemd: READY and STATUS, a signed job as the jobs
    user, an unsigned command refused, reload without a new MQTT session, the watchdog restarting a hung loop, the
    fail-safe hook on every stop."""
    root.install("systemd", "hpcc", "openmpi-bin", "libopenblas0")
    node, client = "svc1", "picluster-agent-svc1"
    # The conffile stays as shipped (the upgrade test needs it): a drop-in points the service at a test config,
    # which requires signed commands as the shipped one does (simulated hardware alone would not).
    test_conf = f'[agent]\nnode_id = "{node}"\ncluster = "{cluster}"\ntick_s = 0.5\n'
    test_conf += f'[mqtt]\nbroker = "{broker.url}"\n[hardware]\nbackend = "sim"\n[security]\nrequire_signed = true\n'
    (root.path / "etc/picluster/test.toml").write_text(test_conf)
    key = make_operator_key(tmp_path / "operator", "tester")
    installed = root.path / "etc/picluster/operators.d/tester.pub"
    shutil.copy(key.keys_dir / "tester.pub", installed)  # what keygen says to do
    installed.chmod(0o644)
    dropin = root.path / "etc/systemd/system" / f"{UNIT}.d"
    dropin.mkdir(parents=True)
    (dropin / "test.conf").write_text(
        "[Service]\nExecStart=\nExecStart=/usr/bin/picluster-agent run --config /etc/picluster/test.toml\n"
        "WatchdogSec=3\nTimeoutAbortSec=2\n"
    )
    try:
        with booted(root, root.path.parent / "nspawn.log") as box, Watcher(broker.url, cluster) as w:
            box.wait("the unit active (READY=1)", lambda: box.show(UNIT, "ActiveState") == "active")
            assert f"connected to {broker.url}" in box.show(UNIT, "StatusText")
            w.wait(f"{node} online", lambda: w.online(node))
            pid = box.show(UNIT, "MainPID")
            mounts = {
                ln.split()[4]: ln.split()[5] for ln in box.run("cat", f"/proc/{pid}/mountinfo").stdout.splitlines()
            }
            assert (
                mounts["/"].startswith("ro")
                and mounts["/sys"].startswith("ro")
                and mounts["/proc/sys"].startswith("ro")
            )
            # ReadWritePaths' holes in ProtectKernelTunables: mounts of their own, left writable where the host's
            # /sys is (systemd-nspawn gives the container a read-only /sys, so "rw" cannot show here).
            assert "/sys/devices/platform" in mounts and "/sys/devices/system/cpu/cpufreq" in mounts
            assert mounts["/var/lib/picluster"].startswith("rw")
            status = box.run("cat", f"/proc/{pid}/status").stdout
            assert re.search(r"^CapBnd:\s+00000000002000e3$", status, re.M), status  # the six in the unit
            assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)

            # Unsigned: refused, saying how to sign.
            monkeypatch.delenv("PICLUSTER_KEY", raising=False)
            monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))  # and no default key
            unsigned = ctl(broker, cluster, "identify", node)
            assert unsigned.returncode == 1 and "unsigned command refused" in unsigned.stderr, unsigned.stderr
            # A real HPL job, two MPI ranks, as the jobs user, inside the sandbox (MemoryDenyWriteExecute, seccomp).
            monkeypatch.setenv("PICLUSTER_KEY", str(key.key_file))
            hpl = ("run", "hpl", "--per-node", "--nodes", node, "--param", "n=1000", "--param", "q=2", "--json")
            run = ctl(broker, cluster, *hpl)
            assert run.returncode == 0, run.stdout + run.stderr
            job = re.search(r'"job": "([^"]+)"', run.stdout).group(1)  # type: ignore[union-attr]
            journal = box.run("journalctl", "-u", UNIT, f"JOB_ID={job}", f"NODE={node}", "-o", "cat").stdout
            assert "event=job_finished" in journal, journal

            (root.path / "etc/picluster/test.toml").write_text(test_conf.replace("tick_s = 0.5", "tick_s = 0.25"))
            box.run("systemctl", "reload", UNIT)
            assert "event=reloaded" in box.run("journalctl", "-u", UNIT, "-o", "cat").stdout
            assert _connects(broker, client) == 1 and box.show(UNIT, "MainPID") == pid

            box.run("kill", "-STOP", pid)  # a hung loop: no tick completes, no WATCHDOG=1
            box.wait("the watchdog restart", lambda: box.show(UNIT, "NRestarts") == "1", timeout_s=20)
            box.wait("active again", lambda: box.show(UNIT, "ActiveState") == "active")
            log = box.run("journalctl", "-u", UNIT, "-o", "cat").stdout
            assert "Watchdog timeout" in log and log.count("picluster-agent failsafe:") == 1, log

            box.run("systemctl", "stop", UNIT)
            assert box.run("journalctl", "-u", UNIT, "-o", "cat").stdout.count("picluster-agent failsafe:") == 2
            w.wait(f"{node} offline", lambda: w.fleet.nodes[node].status == OFFLINE)
    finally:
        subprocess.run(
            ["rm", "-rf", str(dropin), str(root.path / "etc/picluster/test.toml"), str(installed)], check=False
        )


def test_piclusterctl_installs_next_to_the_agent(root: Root, debs: dict[str, Path]) -> None:
    """picluster-controller's Depends: python3-picluster (= version) is met by picluster-agent's Provides."""
    plan = root.run("apt-get", "install", "-s", "-q", *root.stage(debs["picluster-controller"])).stdout
    assert not re.search(r"^(Inst|Remv) (python3-picluster|picluster-agent) ", plan, re.M), plan
    root.install(debs["picluster-controller"])
    assert root.run("piclusterctl", "--version").stdout.strip() == f"piclusterctl {__version__}"
    assert {"picluster-agent", "picluster-controller"} <= installed_packages(root)


def test_upgrade_keeps_the_changed_conffile_and_purge_cleans_up(
    root: Root, debs: dict[str, Path], tmp_path: Path
) -> None:
    v2 = tmp_path / "v2"
    cmd = [str(REPO / "packaging" / "build-deb.sh"), "--version", UPGRADE_VERSION, "--out", str(v2), "--no-lintian"]
    subprocess.run(cmd, check=True, env=ENV, capture_output=True, timeout=900)
    conf = root.path / "etc" / "picluster" / "agent.toml"
    changed = conf.read_text().replace('# broker = "mqtt://localhost:1883"', 'broker = "mqtt://broker.lan:1883"')
    assert changed != conf.read_text()
    conf.write_text(changed)

    # What is installed, upgraded: python3-picluster cannot be installed with the agent (it conflicts).
    root.install(*(next(v2.glob(f"{name}_*.deb")) for name in ("picluster-agent", "picluster-controller")))
    query = root.run("dpkg-query", "-W", "-f=${Package} ${Version}\\n", "picluster-agent", "picluster-controller")
    assert query.stdout.split() == ["picluster-agent", UPGRADE_VERSION, "picluster-controller", UPGRADE_VERSION]
    assert conf.read_text() == changed
    assert root.run("picluster-agent", "--version").stdout.strip() == f"picluster-agent {__version__}"
    assert root.run("piclusterctl", "--version").stdout.strip() == f"piclusterctl {__version__}"

    # picluster-controller goes too: nothing else provides python3-picluster.
    root.run("apt-get", "purge", "-y", "-q", "picluster-agent")
    assert not {"picluster-agent", "picluster-controller"} & installed_packages(root)
    assert not (root.path / "var" / "lib" / "picluster").exists()
    assert not (root.path / ENABLED_LINK).exists() and not conf.exists()
    assert not (root.path / MODULES).exists()  # the byte-compiled files too (py3clean)
    assert "picluster:" in (root.path / "etc" / "passwd").read_text()  # system users stay (Debian practice)


def test_a_laptop_gets_piclusterctl_without_the_agent_and_can_switch(
    tmp_path_factory: pytest.TempPathFactory, debs: dict[str, Path]
) -> None:
    """python3-picluster + picluster-controller in a second fresh root: no service. Then the node's package swaps
    python3-picluster out (Conflicts + Replaces) and piclusterctl keeps working, and the swap back works too."""
    started = time.monotonic()
    with fresh_root(tmp_path_factory, "laptop") as laptop:
        laptop.install(debs["python3-picluster"], debs["picluster-controller"])
        assert laptop.run("piclusterctl", "--version").stdout.strip() == f"piclusterctl {__version__}"
        assert not (laptop.path / UNIT_FILE).exists() and not (laptop.path / "usr/bin/picluster-agent").exists()
        assert "picluster-agent" not in installed_packages(laptop)

        laptop.install(debs["picluster-agent"])
        pkgs = installed_packages(laptop)
        assert {"picluster-agent", "picluster-controller"} <= pkgs and "python3-picluster" not in pkgs
        assert (laptop.path / UNIT_FILE).exists()
        assert laptop.run("piclusterctl", "--version").stdout.strip() == f"piclusterctl {__version__}"

        laptop.install(debs["python3-picluster"])
        pkgs = installed_packages(laptop)
        assert {"python3-picluster", "picluster-controller"} <= pkgs and "picluster-agent" not in pkgs
        assert not (laptop.path / UNIT_FILE).exists() and (laptop.path / MODULES / "__init__.py").exists()
        assert laptop.run("piclusterctl", "--version").stdout.strip() == f"piclusterctl {__version__}"
    print(f"\nlaptop root: {time.monotonic() - started:.0f} s")
