"""The ``distcc`` kind: a build spread over the cluster with distcc. Two roles, started by the controller in order:

- ``role=worker``: ``distccd --daemon --no-detach --listen ADDR --port P --jobs N --allow A ...`` for the job's
  duration (until the controller stops it), as the jobs user. It accepts compiles only from ``allow`` (the
  selection's addresses) and listens only on ADDR: ``jobs.advertise_host`` when that is an address, else the
  address this node reaches the leader from. It says ``ready`` with ``ADDR:P`` once the port listens.
- ``role=leader``: ``make -C DIR -j J CC="distcc CC" [TARGET ...]`` with ``DISTCC_HOSTS`` naming itself and the
  workers. DIR must be a directory with a makefile under ``jobs.build_root``; the targets are plain names. Where
  each file was compiled is read from distcc's own log (``DISTCC_LOG``: one ``compile F on HOST completed ok``
  line per file, the host as written in DISTCC_HOSTS, ``localhost`` for the leader itself).

distccd refuses to stay root, and a build must never run as root: like every job, it runs as the jobs user
(the runner refuses a job when there is none).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import time
from collections.abc import Mapping
from typing import Any

from nodeagent.errors import JobFailed, JobRejected
from nodeagent.jobs.kind import JobContext, Prepared, Progress
from nodeagent.jobs.params import ParamSpec, Value, resolve
from nodeagent.jobs.serving import WorkerRoles, last_line
from nodeagent.protocol.jobs import compiler_name, distcc_hosts, ipv4_list, make_targets
from nodeagent.protocol.messages import Scalar

INSTALL = "apt install distcc"
CLIENT_LOG = "distcc.log"  # the leader's distcc client log (DISTCC_LOG)
DAEMON_LOG = "distccd.log"  # a worker's distccd log: one job summary line per compile (--log-level notice)
MAKEFILES = ("GNUmakefile", "makefile", "Makefile")
# distcc logs a link (or any call that compiles nothing) as "compile (null) on localhost": not a compile.
_COMPILED = re.compile(r"^distcc\[\d+\] compile (?!\(null\) ).+ on (\S+) completed ok$")
_FALLBACK = "failed to distribute, running locally instead"
_SERVED = re.compile(rb"COMPILE_OK")
_DONE = re.compile(rb"^distcc\[\d+\] compile (?!\(null\) ).+ on \S+ completed ok$", re.MULTILINE)
CLIENT_DIR = "distcc"  # the leader's DISTCC_DIR, in its job directory

WORKER = {
    "role": ParamSpec("choice", None, choices=("worker", "leader")),
    "port": ParamSpec("int", 0, min=0, max=65535, help="distccd's port; 0: jobs.distcc_port"),
    "allow": ParamSpec("str", None, help="IPv4 addresses distccd accepts compiles from, comma-separated"),
    "leader": ParamSpec("str", None, help="the leader's IPv4 addresses, comma-separated (the route to listen on)"),
    "slots": ParamSpec("int", 0, min=0, max=1024, help="compiles at once; 0: the node's cores"),
}
LEADER = {
    "role": WORKER["role"],
    "dir": ParamSpec("str", None, help="the build directory, under jobs.build_root (absolute, or relative to it)"),
    "target": ParamSpec("str", "", help="make targets, space-separated; empty: the makefile's default"),
    "cc": ParamSpec("str", "gcc", help="the compiler distcc runs on every node (the same version everywhere)"),
    "jobs": ParamSpec("int", None, min=1, max=65536, help="make -j"),
    "hosts": ParamSpec("str", None, help="DISTCC_HOSTS: localhost/N A.B.C.D:PORT/N ..."),
}


def _param(fn: Any, value: Value, name: str, what: str) -> Any:
    try:
        return fn(str(value))
    except ValueError as exc:
        raise JobRejected(f"{what}: parameter {name!r}: {exc}", f"params.{name}") from None


def source_toward(peer: str) -> str | None:
    """The address this node sends from to reach ``peer`` (the kernel's route choice; no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((peer, 9))  # a UDP connect only chooses the route
            return str(sock.getsockname()[0])
    except OSError:
        return None


def listen_address(advertise: str, leaders: list[str]) -> str:
    """``jobs.advertise_host`` when it is an IPv4 address, else this node's address on the route to the leader."""
    try:
        return str(ipaddress.IPv4Address(advertise))
    except ValueError:
        pass
    for peer in leaders:
        if (source := source_toward(peer)) is not None:
            return source
    raise JobRejected(
        f"distcc worker: no route from this node to the leader ({', '.join(leaders)}); check the network, or set "
        "jobs.advertise_host to this node's address on the cluster network",
        "params.leader",
    )


def build_dir(value: str, root: str) -> str:
    """``value`` (absolute, or relative to ``root``) resolved, inside ``root`` and holding a makefile."""
    if not root:
        raise JobRejected(
            "distcc: jobs.build_root is not set on this node, so it leads no build; set it to the directory builds "
            'may run in (writable by the jobs user), e.g. build_root = "/srv/build"',
            "jobs.build_root",
        )
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, value))  # an absolute value replaces the root
    if os.path.commonpath([real_root, real]) != real_root:
        raise JobRejected(f"distcc: dir {value!r} is outside jobs.build_root ({root})", "params.dir")
    if not os.path.isdir(real):
        raise JobRejected(f"distcc: dir {value!r} is not a directory on this node ({real})", "params.dir")
    if not any(os.path.isfile(os.path.join(real, name)) for name in MAKEFILES):
        raise JobRejected(f"distcc: dir {value!r} has no makefile ({', '.join(MAKEFILES)})", "params.dir")
    return real


def compiles_by_host(log: str) -> tuple[dict[str, int], int]:
    """(files compiled per DISTCC_HOSTS host, compiles that fell back to the leader) from a distcc client log."""
    counts: dict[str, int] = {}
    fallbacks = 0
    for line in log.splitlines():
        if m := _COMPILED.match(line):
            host = m.group(1).split("/", 1)[0].split(",", 1)[0]
            counts[host] = counts.get(host, 0) + 1
        elif _FALLBACK in line:
            fallbacks += 1
    return counts, fallbacks


class _Counter:
    """Lines containing a marker, counted as a log grows (only the new part is read each time)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, int]] = {}  # job id -> (offset, count)

    def count(self, ctx: JobContext, name: str, pattern: re.Pattern[bytes]) -> int:
        """``name`` in the job's directory, which the job owns: read through ``ctx`` (no link followed)."""
        offset, count = self._seen.get(ctx.job_id, (0, 0))
        try:
            chunk = ctx.read_bytes(name, offset)
        except OSError:
            return count
        whole = chunk[: chunk.rfind(b"\n") + 1]  # a half-written last line waits for the next look
        count += len(pattern.findall(whole))
        self._seen[ctx.job_id] = (offset + len(whole), count)
        return count

    def forget(self, job_id: str) -> None:
        self._seen.pop(job_id, None)


class DistccKind(WorkerRoles):
    """distccd on the workers, make through distcc on the leader (see the module's docstring)."""

    name = "distcc"
    worker_program = "distccd"

    def __init__(self) -> None:
        self._counter = _Counter()

    def prepare(self, params: Mapping[str, Scalar], ctx: JobContext) -> Prepared:
        role = params.get("role")
        if role == "worker":
            return self._worker(resolve(WORKER, params, "distcc worker"), ctx)
        values = resolve(LEADER, params, "distcc leader")
        if values["role"] != "leader":
            raise JobRejected(f"distcc: role must be worker or leader, got {role!r}", "params.role")
        return self._leader(values, ctx)

    def _worker(self, values: Mapping[str, Value], ctx: JobContext) -> Prepared:
        what = "distcc worker"
        port = int(values["port"]) or ctx.cfg.distcc_port
        if port < 1024:
            raise JobRejected(f"{what}: port {port} is privileged; the jobs user cannot listen there", "params.port")
        allow = _param(ipv4_list, values["allow"], "allow", what)
        leaders = _param(ipv4_list, values["leader"], "leader", what)
        if not allow or not leaders:
            raise JobRejected(f"{what}: 'allow' and 'leader' each need at least one address", "params.allow")
        host = listen_address(ctx.cfg.advertise_host, leaders)
        slots = int(values["slots"]) or ctx.cores
        argv = [ctx.cfg.distccd, "--daemon", "--no-detach", "--listen", host, "--port", str(port)]
        argv += ["--jobs", str(slots), "--log-file", str(ctx.work_dir / DAEMON_LOG), "--log-level", "notice"]
        for addr in allow:
            argv += ["--allow", addr]
        plan = {"role": "worker", "port": port, "host": host, "allow": allow, "slots": slots}
        return Prepared(argv=tuple(argv), plan=plan, install_hint=INSTALL)

    def _leader(self, values: Mapping[str, Value], ctx: JobContext) -> Prepared:
        what = "distcc leader"
        directory = build_dir(str(values["dir"]), ctx.cfg.build_root)
        targets = _param(make_targets, values["target"], "target", what)
        cc = _param(compiler_name, values["cc"], "cc", what)
        hosts = _param(distcc_hosts, values["hosts"], "hosts", what)
        jobs = int(values["jobs"])
        distcc_dir = ctx.work_dir / CLIENT_DIR  # distcc's lock and state files (its default is in $HOME)
        distcc_dir.mkdir(exist_ok=True)
        env = {
            "DISTCC_HOSTS": " ".join(f"{h}/{n}" for h, n in hosts),
            "DISTCC_DIR": str(distcc_dir),
            "DISTCC_LOG": str(ctx.work_dir / CLIENT_LOG),
        }
        argv = (ctx.cfg.make, "-C", directory, "-j", str(jobs), f"CC={ctx.cfg.distcc} {cc}", *targets)
        plan = {"role": "leader", "dir": directory, "target": targets, "cc": cc, "jobs": jobs}
        plan["hosts"] = env["DISTCC_HOSTS"]
        return Prepared(argv, requires=(ctx.cfg.distcc, cc), env=env, plan=plan, install_hint=f"{INSTALL} make gcc")

    def progress(self, ctx: JobContext, output_tail: str) -> Progress | None:
        if not (ctx.work_dir / CLIENT_DIR).is_dir():  # a worker
            served = self._counter.count(ctx, DAEMON_LOG, _SERVED)
            return Progress(None, f"served {served} compiles")
        done = self._counter.count(ctx, CLIENT_LOG, _DONE)
        return Progress(None, f"{done} files compiled") if done else Progress(None, "building")

    def lead_result(self, ctx: JobContext, prepared: Prepared, output: str, returncode: int) -> dict[str, Any]:
        self._counter.forget(ctx.job_id)
        wall_s = round(time.monotonic() - ctx.started, 3) if ctx.started else None
        if returncode != 0:
            raise JobFailed(f"make exited with status {returncode} after {wall_s} s: {last_line(output)}")
        try:
            log = ctx.read(CLIENT_LOG)
        except OSError as exc:
            raise JobFailed(f"the build passed but its distcc log could not be read: {exc}") from None
        compiles, fallbacks = compiles_by_host(log)
        return {
            "passed": True,
            "wall_s": wall_s,
            "make_jobs": prepared.plan["jobs"],
            "compiles": compiles,
            "compiles_total": sum(compiles.values()),
            "fallbacks": fallbacks,
            "hosts": prepared.plan["hosts"],
        }
