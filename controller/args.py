"""piclusterctl's command line grammar: every subcommand and option, and nothing that runs one.

Kept apart from the subcommands so that parsing (``--help``, ``--version``) imports no MQTT client, no table
renderer, no history and no node-set library; ``cli.main`` imports the module a subcommand needs once it has
been chosen. Of picluster it reads only the version and the names of the login's environment variables.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from nodeagent.mqtt.env import ENV_CA_FILE, ENV_KEY, ENV_PASSWORD_FILE, ENV_USERNAME
from nodeagent.protocol.version import __version__

TYPE_CHECKING = False  # not typing's: importing typing costs --version a few milliseconds
if TYPE_CHECKING:
    from typing import Any

DEFAULT_BROKER = "mqtt://localhost:1883"
# What `run hpl --param KEY=VALUE` may override: controller/hpl_plan.py's PARAM_KEYS, which the planner (and its
# imports) would cost --help to load; tests/unit/test_ctl_imports.py checks the two agree.
PARAM_HELP = "override the plan; keys: n, nb, p, q, mem_fraction, ranks_per_node, oversubscribe"


class UsageError(Exception):
    """Bad arguments: exit 2 with one line."""


class CommandFailed(Exception):
    """The command could not do its work (no broker, an unusable history): exit 1 with one line. Defined here, with
    the grammar, so that ``cli.main`` can catch it without importing the modules that raise it."""


COMMANDS = ("jobs", "results", "report", "cancel")
SINGLE = {
    "stress": "stress-ng burn-in on each node (--set duration_s=60 --set workers=2 --set stressor=cpu)",
    "llama-bench": "llama.cpp llama-bench on each node (--set model=/path/model.gguf)",
}
CLUSTER = {
    "llama-rpc": "llama.cpp across the nodes: rpc-server on workers, llama-bench --rpc on the leader",
    "dllama": "distributed-llama across 1, 2, 4, 8 ... nodes: dllama worker, then dllama inference on the root",
    "distcc": "a build over the nodes: distccd on the others, make -j through distcc on the leader (--set dir=DIR)",
}
KNOWN = ("hpl", *SINGLE, *CLUSTER, "template")
HEAVY_KINDS = (*SINGLE, *CLUSTER)  # checked against the chassis power budget; templates are judged by the node


def common(parser: argparse.ArgumentParser, default: Any) -> None:
    """Global options, accepted before or after the subcommand."""
    parser.add_argument(
        "--broker", metavar="URL", default=default, help=f"broker (default: PICLUSTER_BROKER or {DEFAULT_BROKER})"
    )
    parser.add_argument(
        "--cluster", metavar="NAME", default=default, help="cluster name (default: PICLUSTER_CLUSTER or 'default')"
    )
    parser.add_argument("--json", action="store_true", default=default, help="machine-readable output")
    login = "the operator's MQTT login, when the broker wants one"
    parser.add_argument("--mqtt-user", metavar="NAME", default=default, help=f"{login} (or {ENV_USERNAME})")
    parser.add_argument(
        "--mqtt-password-file", metavar="FILE", default=default, help=f"its password (or {ENV_PASSWORD_FILE})"
    )
    parser.add_argument(
        "--mqtt-ca-file", metavar="FILE", default=default, help=f"CA for an mqtts:// broker (or {ENV_CA_FILE})"
    )
    parser.add_argument(
        "--key",
        metavar="FILE",
        default=default,
        help=f"operator key to sign commands with (or {ENV_KEY}; default ~/.config/picluster/operator.key if present)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="piclusterctl", description="Operate a picluster fleet over MQTT.")
    parser.add_argument("--version", action="version", version=f"piclusterctl {__version__}")
    common(parser, None)
    sub = parser.add_subparsers(dest="command", required=True)
    nodes = sub.add_parser("nodes", help="list every node seen, with its latest telemetry")
    common(nodes, argparse.SUPPRESS)
    run = sub.add_parser("run", help="run a job on a set of nodes")
    run_sub = run.add_subparsers(dest="kind", required=True)
    hpl = run_sub.add_parser("hpl", help="HPL (Linpack): one run over all selected nodes (--per-node: one each)")
    common(hpl, argparse.SUPPRESS)
    hpl.add_argument("--nodes", required=True, metavar="NODESET", help="all, node[1-4], node1,node3 ...")
    hpl.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=PARAM_HELP,
    )
    hpl.add_argument("--timeout", type=float, default=3600.0, metavar="S", help="seconds per node (default 3600)")
    hpl.add_argument("--force", action="store_true", help="run even where a node's health gate refuses")
    add_run_options(hpl)
    run_parsers(run_sub, common)
    hpl.add_argument("--per-node", action="store_true", help="a separate HPL on each node instead of one over all")
    fan = sub.add_parser("fan", help="set the fan of a set of nodes: auto (the curve) or a fixed percent")
    fan.add_argument("nodes", metavar="NODESET")
    fan.add_argument("mode", metavar="auto|PERCENT")
    identify = sub.add_parser("identify", help="light a node's LEDs (where it has them) and log a line on it")
    identify.add_argument("nodes", metavar="NODESET")
    policy = sub.add_parser("policy", help="effective thresholds and the thermal guard's state of each node")
    policy.add_argument("nodes", metavar="NODESET")
    pwr = sub.add_parser("power", help="switch chassis slots (NanoCluster): on, off or cycle, through slot 1")
    pwr.add_argument("action", choices=("on", "off", "cycle"))
    pwr.add_argument("nodes", metavar="NODESET")
    pwr.add_argument("--force", action="store_true", help="off: hold the line 8 s (cut power) instead of asking")
    keygen = sub.add_parser("keygen", help="make an operator signing key and say where its public half goes")
    keygen.add_argument(
        "--out", metavar="FILE", help="the private key file (default ~/.config/picluster/operator.key); .pub beside it"
    )
    forget = sub.add_parser("forget", help="remove a decommissioned node from the broker and Home Assistant")
    forget.add_argument("node", metavar="NODE")
    forget.add_argument("--force", action="store_true", help="even when the node is online")
    forget.add_argument("--ha-prefix", default="homeassistant", metavar="PREFIX", help="HA discovery prefix")
    for cmd in (fan, identify, policy, pwr, forget, keygen):
        common(cmd, argparse.SUPPRESS)
    jobs_parsers(sub, common)
    live_parsers(sub, common)
    return parser


def live_parsers(sub: Any, common: Any) -> None:
    """``top`` (the fleet live) and ``plot`` (a recorded run as a picture)."""
    top = sub.add_parser("top", help="every node's temperature, fan, power, frequency, guard, job and progress, live")
    top.add_argument("--nodes", metavar="NODESET", help="only these nodes (default: every node seen)")
    top.add_argument("--once", action="store_true", help="print one frame and exit (plain text off a terminal)")
    top.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between frames (default 1)")
    common(top, argparse.SUPPRESS)
    plot = sub.add_parser("plot", help="a PNG of a recorded job's temperature, frequency, power and fan per node")
    plot.add_argument("job", metavar="JOB")
    plot.add_argument("-o", "--output", metavar="FILE.png", help="where to write it (default: JOB.png)")
    common(plot, argparse.SUPPRESS)
    add_history_options(plot)


def add_history_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--history",
        metavar="PATH",
        help="job history file (default: PICLUSTER_HISTORY or $XDG_DATA_HOME/picluster/history.sqlite3)",
    )
    parser.add_argument(
        "--client-id",
        metavar="ID",
        help="client id of the persistent session (default: PICLUSTER_CLIENT_ID or piclusterctl-USER-HOST-CLUSTER)",
    )


def add_run_options(parser: argparse.ArgumentParser, *, detach: bool = True) -> None:
    """Options of ``run <kind>`` that belong to the history and the wall meter (and ``--detach``)."""
    add_history_options(parser)
    if detach:
        parser.add_argument(
            "--detach", action="store_true", help="return once every node has answered; see it later with `results`"
        )
    parser.add_argument(
        "--power-topic",
        metavar="TOPIC",
        help="MQTT topic of a smart plug measuring the cluster's wall power (default: PICLUSTER_POWER_TOPIC)",
    )


def jobs_parsers(sub: Any, common: Any) -> None:
    """The subcommands of this module; ``common`` adds the global options (--broker, --cluster, --json)."""
    jobs = sub.add_parser("jobs", help="jobs in the history, newest first")
    jobs.add_argument("--limit", type=int, default=20, metavar="N", help="at most N jobs (default 20)")
    res = sub.add_parser("results", help="a job's results per node (default: the newest job)")
    res.add_argument("job", nargs="?", metavar="JOB")
    rep = sub.add_parser("report", help="a job's result as a top500-benchmark table row (md), json or csv")
    rep.add_argument("job", metavar="JOB")
    rep.add_argument("--format", choices=("md", "json", "csv"), default="md")
    rep.add_argument("--name", default="", help="md: the Configuration cell (default: from the nodes' facts)")
    rep.add_argument("--link", default="", metavar="URL", help="md: link the Configuration cell to URL")
    rep.add_argument("--arch", default="", help="md: the Architecture cell (default: Arm for Cortex/Neoverse)")
    can = sub.add_parser("cancel", help="stop a job on the nodes running it")
    can.add_argument("job", metavar="JOB")
    can.add_argument("--nodes", metavar="NODESET", help="where to cancel (default: its unfinished nodes)")
    for parser in (jobs, res, rep, can):
        common(parser, argparse.SUPPRESS)
        add_history_options(parser)


def rewrite(argv: Sequence[str]) -> list[str]:
    """``run NAME ...`` for a template NAME becomes ``run template NAME ...`` (argparse needs fixed choices)."""
    out = list(argv)
    i = 0
    while i < len(out) - 1:
        word = out[i]
        if word in ("--broker", "--cluster"):  # global options that take a value
            i += 2
            continue
        if word == "run":
            following = out[i + 1]
            if not following.startswith("-") and following not in KNOWN:
                out.insert(i + 1, "template")
            break
        if not word.startswith("-"):
            break  # another subcommand
        i += 1
    return out


def run_parsers(run_sub: Any, common: Callable[[argparse.ArgumentParser, Any], None]) -> None:
    """The run subcommands of this module, next to ``run hpl``."""
    for name, text in {**SINGLE, **CLUSTER, "template": "a job template a node's config allows"}.items():
        p = run_sub.add_parser(name, help=text, description=text)
        common(p, argparse.SUPPRESS)
        if name == "template":
            p.add_argument("template", metavar="NAME", help="the template's name (also: piclusterctl run NAME)")
        p.add_argument("--nodes", required=True, metavar="NODESET", help="all, node[1-4], node1,node3 ...")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a job parameter")
        p.add_argument("--timeout", type=float, default=3600.0, metavar="S", help="seconds (default 3600)")
        p.add_argument("--force", action="store_true", help="run even where a node's health gate refuses")
        if name in CLUSTER:
            p.add_argument("--leader", metavar="NODE", help="the node that runs the benchmark (default: the first)")
        else:
            p.add_argument("--queue", action="store_true", help="wait in a busy node's queue instead of a refusal")
        # The history and the wall meter, as for run hpl; a cluster kind is followed by the controller to its end.
        add_run_options(p, detach=name not in CLUSTER)
