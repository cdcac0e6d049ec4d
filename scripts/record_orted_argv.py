"""Record what Open MPI's mpirun really asks a member node to run: the words it gives its ``plm_rsh_agent``.

Starts a private broker and simulated agents (node1 leads, the others are members; two unless ``--nodes``), whose
``[mpi] launch_agent`` is a small recorder that appends its arguments (the host, then the daemon's command line) as
one JSON line to a file and then becomes picluster's real launcher. ``piclusterctl run hpl`` over all the nodes
then runs one real hpcc.

    python3 scripts/record_orted_argv.py OUT.jsonl            # both agents on this host (loopback, --sim)
    python3 scripts/record_orted_argv.py --netns OUT.jsonl    # each agent in its own network namespace (root)

tests/data/mpi/README.md says which recordings the tests use and how they were made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.localcluster import agent_argv, free_port, start_mosquitto, stop, wait_port  # noqa: E402

RECORDER = """import json, os, sys
with open({out!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv(sys.executable, [sys.executable, "-m", "nodeagent.mpi.launcher", *sys.argv[1:]])
"""


def _config(work: Path, recorder: Path, if_include: str) -> str:
    conf = f'[agent]\ntick_s = 0.5\n[mpi]\nlaunch_agent = "{sys.executable} {recorder}"\n'
    return conf + (f'if_include = "{if_include}"\nbtl = "self,tcp"\n' if if_include else "")


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO)}


def record(out: Path, netns: bool, count: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="picluster-record-"))
    work.chmod(0o755)
    recorder = work / "record_launch.py"
    recorder.write_text(RECORDER.format(out=str(out.resolve())))
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    lab = None
    broker = None
    try:
        if netns:
            from tests.e2e.netns import NetnsLab

            lab = NetnsLab(count).open()
            conf = work / "mosquitto.conf"
            conf.write_text(
                f"listener {port} 127.0.0.1\nlistener {port} {lab.bridge_ip}\nallow_anonymous true\n"
                "set_tcp_nodelay true\npersistence false\n"
            )
            broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
            wait_port(port)
            url, if_include = f"mqtt://{lab.bridge_ip}:{port}", lab.subnet
        else:
            broker = start_mosquitto(work, port)
            url, if_include = f"mqtt://127.0.0.1:{port}", ""
        for i in range(1, count + 1):
            state = work / f"node{i}"
            state.mkdir()
            (state / "agent.toml").write_text(_config(work, recorder, if_include))
            argv = agent_argv(f"node{i}", url, "rec", state, "--config", str(state / "agent.toml"))
            argv = lab.exec_argv(i, argv) if lab else argv
            log = open(state / "agent.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=state))
        time.sleep(3)
        ctl = [sys.executable, "-m", "controller.cli", "--broker", f"mqtt://127.0.0.1:{port}", "--cluster", "rec"]
        ctl += ["run", "hpl", "--nodes", f"node[1-{count}]", "--json", "--param", "n=800", "--param", "nb=64"]
        run = subprocess.run(ctl, capture_output=True, text=True, timeout=300, cwd=REPO, env=_env())
        print(run.stdout[-2000:], run.stderr[-2000:], sep="\n")
        if run.returncode != 0:
            raise SystemExit(f"the cluster run failed ({run.returncode}); agent logs in {work}")
    finally:
        for proc in procs:
            stop(proc)
        if broker is not None:
            stop(broker)
        if lab is not None:
            lab.close()
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="JSON lines file the recorder appends to")
    parser.add_argument("--netns", action="store_true", help="one network namespace per node (needs root, ip)")
    parser.add_argument("--nodes", type=int, default=2, help="how many nodes (node1 leads)")
    args = parser.parse_args()
    record(args.out, args.netns, args.nodes)
    for line in args.out.read_text().splitlines():
        print(json.dumps(json.loads(line), indent=1))


if __name__ == "__main__":
    main()
