"""The CPU frequency cap: ``scaling_max_freq`` of every cpufreq policy, lowered by the power budget.

The kernel keeps the current frequency at or below ``scaling_max_freq`` whatever the governor asks, so the cap
works under ``performance`` too. Lifting the cap writes ``cpuinfo_max_freq`` back (the agent lifts it when it
stops and at start-up), so a cap left by an agent that crashed does not outlive the next start. Writing needs
root.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nodeagent.hw.root import SysfsRoot

log = logging.getLogger(__name__)

POLICIES_GLOB = "sys/devices/system/cpu/cpufreq/policy*"
STEP_KHZ = 100_000  # the BCM2712's operating points are 100 MHz apart


def _ints(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return ()


class FreqCap:
    """Every cpufreq policy under ``root``: the frequencies the cap may take, and the cap itself."""

    def __init__(self, root: SysfsRoot) -> None:
        self.policies = root.glob(POLICIES_GLOB)  # once: policies do not come and go

    def ladder_khz(self) -> tuple[int, ...]:
        """The available frequencies (kHz) of policy0, lowest first; 100 MHz steps between the cpuinfo limits
        where the driver lists none; empty without cpufreq."""
        if not self.policies:
            return ()
        policy = self.policies[0]
        listed = _ints(policy / "scaling_available_frequencies")
        if listed:
            return tuple(sorted(set(listed)))
        low, high = _ints(policy / "cpuinfo_min_freq"), _ints(policy / "cpuinfo_max_freq")
        if not low or not high or low[0] > high[0]:
            return ()
        return (*range(low[0], high[0], STEP_KHZ), high[0])

    def set(self, khz: int | None) -> list[str]:
        """Cap every policy at ``khz`` (None: lift the cap); one problem line per policy that refused."""
        problems = []
        for policy in self.policies:
            path = policy / "scaling_max_freq"
            top = _ints(policy / "cpuinfo_max_freq")
            try:
                if not top:
                    raise ValueError(f"no {policy / 'cpuinfo_max_freq'}")
                path.write_text(str(top[0] if khz is None else min(khz, top[0])))
            except (OSError, ValueError) as e:
                problems.append(f"frequency cap: {path}: {getattr(e, 'strerror', None) or e} (needs root)")
        for line in problems:
            log.warning("event=freq_cap_not_set %s", line)
        return problems
