"""Wall power from a smart plug over MQTT, so Gflops per watt is measured at the wall as top500-benchmark's
tables are (average power over the run; Gflops/W = Gflops / average W).

Payloads understood (``parse_power``):

- zigbee2mqtt: ``zigbee2mqtt/<plug>`` JSON with ``"power": 12.3`` (watts);
- Tasmota: ``tele/<dev>/SENSOR`` JSON with ``"ENERGY": {"Power": 12.3, ...}``; a plug with several channels
  sends a list there and the channels are added;
- a plain number (``12.3``), as many plugs and bridges publish on a topic of its own.

``WallMeter`` keeps the samples of one topic with their arrival time and sums up a time window.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class PowerFormatError(ValueError):
    """A payload on the power topic that holds no power reading."""


def _watts(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PowerFormatError(f"{where}: expected a number of watts, got {value!r}")
    try:
        watts = float(value)
    except ValueError:
        raise PowerFormatError(f"{where}: expected a number of watts, got {value!r}") from None
    if not math.isfinite(watts) or watts < 0:
        raise PowerFormatError(f"{where}: expected a finite number of watts, 0 or more, got {value!r}")
    return watts


def parse_power(payload: bytes) -> float:
    """Watts from one smart-plug message; PowerFormatError naming what was wrong otherwise."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise PowerFormatError("not UTF-8 text; expected JSON or a number") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise PowerFormatError(
            f"not JSON or a number: {text[:60]!r}; expected zigbee2mqtt {{'power': W}}, Tasmota "
            "{'ENERGY': {'Power': W}} or a plain number"
        ) from None
    if isinstance(data, int | float) and not isinstance(data, bool):
        return _watts(data, "number")
    if not isinstance(data, dict):
        raise PowerFormatError(f"expected a JSON object or a number, got {type(data).__name__}")
    if "power" in data:
        return _watts(data["power"], "power")
    energy = data.get("ENERGY")
    if isinstance(energy, dict) and "Power" in energy:
        power = energy["Power"]
        if isinstance(power, list):  # multi-channel plugs: one value per relay
            return sum(_watts(p, f"ENERGY.Power[{i}]") for i, p in enumerate(power))
        return _watts(power, "ENERGY.Power")
    raise PowerFormatError(
        f"no power reading (keys: {', '.join(sorted(map(str, data))) or 'none'}); expected zigbee2mqtt 'power' "
        "or Tasmota 'ENERGY.Power'"
    )


@dataclass(frozen=True)
class WallPower:
    """What the plug reported during a window."""

    avg_w: float
    peak_w: float
    samples: int

    def fields(self, gflops: float | None) -> dict[str, Any]:
        """The result keys: ``wall_power_avg_w``, ``wall_power_peak_w``, ``wall_power_samples`` and, with a
        Gflops figure, ``wall_gflops_per_w``."""
        out: dict[str, Any] = {
            "wall_power_avg_w": round(self.avg_w, 3),
            "wall_power_peak_w": round(self.peak_w, 3),
            "wall_power_samples": self.samples,
        }
        if gflops is not None and self.avg_w > 0:
            out["wall_gflops_per_w"] = round(gflops / self.avg_w, 4)
        return out


class WallMeter:
    """Collects power samples of ``topic`` (feed it every message with ``tap``), summed up by ``window``."""

    def __init__(self, topic: str, *, clock: Callable[[], float] = time.time) -> None:
        self.topic = topic
        self._clock = clock
        self._lock = threading.Lock()
        self._samples: list[tuple[float, float]] = []
        self.errors: list[str] = []  # the first few bad payloads, for one warning

    def tap(self, topic: str, payload: bytes) -> None:
        """Session tap (paho's thread): keep a sample of our topic, ignore everything else."""
        if topic != self.topic:
            return
        try:
            watts = parse_power(payload)
        except PowerFormatError as exc:
            with self._lock:
                if len(self.errors) < 5:
                    self.errors.append(str(exc))
            return
        with self._lock:
            self._samples.append((self._clock(), watts))

    def add(self, t: float, watts: float) -> None:
        with self._lock:
            self._samples.append((t, watts))

    def window(self, start: float, end: float) -> WallPower | None:
        """Mean and peak of the samples from ``start`` to ``end`` (Unix time); None without any.

        The mean is of samples, as the plug sends them at a steady rate; the last sample before ``start``
        counts too, since it is the power at the moment the run began (plugs report every few seconds).
        """
        with self._lock:
            samples = sorted(self._samples)
        inside = [w for t, w in samples if start <= t <= end]
        before = [w for t, w in samples if t < start]
        if before:
            inside.insert(0, before[-1])
        if not inside:
            return None
        return WallPower(sum(inside) / len(inside), max(inside), len(inside))
