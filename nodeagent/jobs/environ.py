"""The environment a job inherits from the agent: everything but a credential.

The agent's own login lives in its config (``mqtt.password_file``), never in its environment; but whoever started
it (a test, a shell, a unit's ``Environment=``) may have left a broker password, an operator key or systemd's
credentials directory there, and a job that prints its environment publishes it (issue 12, finding 3).
"""

from __future__ import annotations

from collections.abc import Mapping

SECRET_PREFIXES = ("PICLUSTER_MQTT_",)  # the broker login of piclusterctl and the MPI launcher: ENV_* in mqtt/env.py
SECRET_NAMES = frozenset({"PICLUSTER_KEY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"})


def job_environ(agent_env: Mapping[str, str]) -> dict[str, str]:
    """``agent_env`` without the names that carry a credential or the agent's systemd sockets."""
    return {k: v for k, v in agent_env.items() if k not in SECRET_NAMES and not k.startswith(SECRET_PREFIXES)}
