"""``piclusterctl plot JOB [-o FILE.png]``: the job's recorded telemetry as a PNG (controller/plot.py)."""

from __future__ import annotations

import argparse
import os
import sys

from controller import jobs_cli
from controller.history import History
from controller.plot import PlotError, write_png
from nodeagent.mqtt.settings import Broker
from nodeagent.protocol import Topics


def cmd_plot(broker: Broker, topics: Topics, args: argparse.Namespace) -> int:
    history = History(jobs_cli.history_path(args))
    try:
        jobs_cli.drain(args, broker, topics, history)  # a result that came in while no piclusterctl ran
        job = jobs_cli.find_job(history, args.job, topics)
        path = args.output or f"{job.id}.png"
        try:
            write_png(job, path)
        except PlotError as exc:
            print(f"piclusterctl: {exc}", file=sys.stderr)
            return 1
    finally:
        history.close()
    print(f"{os.path.abspath(path)}: {job.id} ({job.kind}), {len((job.result or {})['telemetry'])} node(s)")
    return 0
