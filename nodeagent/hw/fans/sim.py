"""The simulator's fan, as a ``Fan``: what a ``--sim`` node drives."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nodeagent.hw.fans.base import Fan

if TYPE_CHECKING:
    from nodeagent.hw.base import Sample
    from nodeagent.hw.sim import SimBackend


class SimFan(Fan):
    """The simulator's fan seen as a ``Fan``: duty goes to ``SimBackend.set_fan_duty()``.

    The RPM is the one in the simulator's latest sample, which the agent hands over with ``observe(sample)`` each
    tick (the simulator itself keeps no sample); before the first one, and while the simulated fan sensor is
    failed, ``read_rpm()`` is None.
    """

    def __init__(self, sim: SimBackend, *, min_duty_pct: float = 0.0) -> None:
        super().__init__(f"sim:{sim.node_id}", min_duty_pct=min_duty_pct)
        self._sim = sim
        self._duty_pct = sim.cfg.fan_duty_pct
        self._rpm: int | None = None

    def _apply_duty(self, pct: float) -> None:
        self._sim.set_fan_duty(pct)

    def observe(self, sample: Sample) -> None:
        """Take the RPM from the simulator's sample of this tick."""
        self._rpm = sample.fan_rpm

    def read_rpm(self) -> int | None:
        return self._rpm
