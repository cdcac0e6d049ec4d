"""The systemd side of the agent: notify (READY, WATCHDOG, STATUS, RELOADING, STOPPING) and reload on SIGHUP.

The in-process tests drive nodeagent.sd against a real AF_UNIX datagram socket. The process tests run a real
``picluster-agent run --sim`` with $NOTIFY_SOCKET and $WATCHDOG_USEC set, the way systemd starts it, against the
real Mosquitto of tests/conftest.py.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import statistics
import time
from pathlib import Path

import pytest

from nodeagent import sd
from nodeagent.agent import BROKER_ATTEMPT_S
from nodeagent.protocol import OFFLINE, Telemetry, decode
from tests.conftest import AgentFactory, Mosquitto
from tests.integration.helpers import Watcher
from tests.packaging.conftest import NotifySocket

# --- nodeagent.sd in-process ------------------------------------------------------------------------------------


def test_notify_is_a_no_op_outside_systemd() -> None:
    assert sd.notify("READY=1", env={}) is False
    assert sd.watchdog_interval_s({}) is None
    notifier = sd.Notifier(env={})
    notifier.after_tick(0.0, "idle", ready=True)  # nothing to send to, nothing raised
    assert not notifier.enabled and notifier.ready


def test_notify_sends_the_fields_as_one_datagram(notify_socket: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address}
    assert sd.notify("READY=1", "STATUS=two\nlines", env=env)
    notify_socket.wait("the datagram", lambda: notify_socket.received)
    assert notify_socket.received[0].fields == {"READY": "1", "STATUS": "two lines"}


def test_notify_through_systemd_python(notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    if sd._daemon is None:
        pytest.fail("python3-systemd is not importable: run `make test`, which installs it (apt)")
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    assert sd.notify("WATCHDOG=1")
    notify_socket.wait("the datagram", lambda: notify_socket.with_field("WATCHDOG", "1"))


def test_notify_never_raises_when_systemd_is_gone(tmp_path: Path) -> None:
    assert sd.notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}) is False


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_our_pid() -> None:
    assert sd.watchdog_interval_s({"WATCHDOG_USEC": "3000000"}) == 1.5
    assert sd.watchdog_interval_s({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}) == 1.5
    assert sd.watchdog_interval_s({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}) is None
    assert sd.watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert sd.watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None


def test_notifier_sends_ready_once_pings_at_half_the_interval_and_status_on_change(
    notify_socket: NotifySocket,
) -> None:
    notifier = sd.Notifier(env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000"})
    sent = []
    for now, status, ready in [
        (0.0, "a", False),  # first tick, broker attempt still running: no READY yet
        (0.5, "a", True),
        (1.0, "a", True),
        (1.5, "b", True),
        (2.0, "b", True),
    ]:
        notifier.after_tick(now, status, ready=ready)
        time.sleep(0.01)
        notify_socket.pump()
        sent.append(notify_socket.received.pop().fields if notify_socket.received else {})
    assert sent == [
        {"WATCHDOG": "1", "STATUS": "a"},
        {"READY": "1"},
        {"WATCHDOG": "1"},
        {"STATUS": "b"},
        {"WATCHDOG": "1"},
    ]


# --- a real agent process ----------------------------------------------------------------------------------------


def _start(agents: AgentFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], toml: str):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    conf = tmp_path / "sd-agent.toml"
    conf.write_text(toml)
    return agents.start("n1", extra=("--config", str(conf))), conf


def _connects(broker: Mosquitto, client_id: str = "picluster-agent-n1") -> int:
    log = (broker.workdir / "mosquitto.log").read_text(errors="replace")
    return len(re.findall(rf"New client connected from .* as {re.escape(client_id)} ", log))


def test_agent_says_ready_after_first_tick_and_broker_then_pings_the_watchdog(
    agents: AgentFactory,
    broker: Mosquitto,
    notify_socket: NotifySocket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000"}
    agent, _ = _start(agents, tmp_path, monkeypatch, env, "[agent]\ntick_s = 0.1\n")
    ready = notify_socket.wait("READY=1", lambda: notify_socket.with_field("READY", "1"))[0]
    # READY came after the broker session opened and a sample was taken: its STATUS says both.
    assert _connects(broker) == 1
    status = [d.fields["STATUS"] for d in notify_socket.received if "STATUS" in d.fields][-1]
    assert re.search(r"\d+ °C, fan \d+ %; connected to mqtt://127\.0\.0\.1:\d+; idle", status), status
    assert ready.at >= notify_socket.received[0].at
    notify_socket.wait("5 watchdog pings", lambda: len(notify_socket.with_field("WATCHDOG", "1")) >= 5, timeout_s=10)
    pings = [d.at for d in notify_socket.with_field("WATCHDOG", "1")]
    gaps = [b - a for a, b in itertools.pairwise(pings[1:])]
    assert 0.9 <= statistics.median(gaps) <= 1.3, gaps  # half of WATCHDOG_USEC, on the next 0.1 s tick
    assert agent.stop() == 0
    notify_socket.wait("STOPPING=1", lambda: notify_socket.with_field("STOPPING", "1"), timeout_s=5)


def test_agent_is_ready_without_a_broker(
    agents: AgentFactory, notify_path: NotifySocket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node's safety never waits for the broker: READY comes once the first attempt has had its chance.
    agents.broker.stop()  # nothing listens on its port: connection refused, again and again
    start = time.monotonic()
    agent, _ = _start(agents, tmp_path, monkeypatch, {"NOTIFY_SOCKET": notify_path.address}, "[agent]\ntick_s = 0.2\n")
    notify_path.wait("READY=1", lambda: notify_path.with_field("READY", "1"), timeout_s=15)
    assert BROKER_ATTEMPT_S <= time.monotonic() - start <= BROKER_ATTEMPT_S + 5
    assert "no session with mqtt://127.0.0.1" in notify_path.with_field("STATUS")[-1].fields["STATUS"]
    assert agent.stop() == 0


def _tick_gaps(w: Watcher, node: str, since_seq: int) -> list[float]:
    ticks = sorted(
        {
            t.seq: t.t for m in w.seen if m.topic == w.topics.telemetry(node) for t in [decode(m.payload, Telemetry)]
        }.items()
    )
    ticks = [(seq, t) for seq, t in ticks if seq > since_seq]
    return [b[1] - a[1] for a, b in itertools.pairwise(ticks)]


def test_sighup_reloads_the_tick_without_dropping_the_mqtt_session(
    agents: AgentFactory,
    broker: Mosquitto,
    notify_path: NotifySocket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"NOTIFY_SOCKET": notify_path.address}
    agent, conf = _start(agents, tmp_path, monkeypatch, env, "[agent]\ntick_s = 0.5\n")
    with Watcher(broker.url, agents.cluster) as w:
        w.wait("n1 online", lambda: w.online("n1"))
        notify_path.wait("READY=1", lambda: notify_path.with_field("READY", "1"))
        w.wait("4 ticks at 0.5 s", lambda: len(_tick_gaps(w, "n1", 0)) >= 4)
        assert 0.4 <= statistics.median(_tick_gaps(w, "n1", 0)) <= 0.6
        seq = w.fleet.nodes["n1"].telemetry.seq  # type: ignore[union-attr]

        conf.write_text('[agent]\ntick_s = 0.1\nlog_level = "debug"\n[mqtt]\nkeepalive_s = 45\n[jobs]\nkinds = []\n')
        agent.proc.send_signal(signal.SIGHUP)
        notify_path.wait("RELOADING=1", lambda: notify_path.with_field("RELOADING", "1"))
        notify_path.wait("READY=1 again", lambda: len(notify_path.with_field("READY", "1")) >= 2)
        w.wait("10 ticks at 0.1 s", lambda: len(_tick_gaps(w, "n1", seq + 1)) >= 10, timeout_s=10)
        assert 0.07 <= statistics.median(_tick_gaps(w, "n1", seq + 1)) <= 0.15
        # The jobs section applied too: the re-announced facts list no job kinds.
        w.wait("facts without hpl", lambda: w.fleet.nodes["n1"].facts.capabilities == ())  # type: ignore[union-attr]

        conf.write_text("[agent]\ntick_s = 'fast'\n")  # a bad file: logged, the running config stays
        agent.proc.send_signal(signal.SIGHUP)
        notify_path.wait("READY=1 a third time", lambda: len(notify_path.with_field("READY", "1")) >= 3)
        assert agent.proc.poll() is None
        assert all(m.payload.decode() != OFFLINE for m in w.seen if m.topic == w.topics.status("n1"))
    assert _connects(broker) == 1  # one session all along
    assert agent.stop() == 0
    out = agent.output()
    assert "event=reloaded" in out and "restart_needed=mqtt" in out
    assert "event=reload_failed" in out and "tick_s" in out
    assert "Traceback" not in out
