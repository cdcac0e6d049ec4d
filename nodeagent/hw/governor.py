"""The CPU frequency governor: set for a benchmark, put back afterwards.

HPL wants every core at full clock from the first second; ``ondemand`` ramps up late and top500-benchmark's
error "CPU Throttling apparently enabled!" is what a benchmark sees without ``performance``. Writing
``scaling_governor`` needs root.
"""

from __future__ import annotations

import logging

from nodeagent.hw.root import SysfsRoot

log = logging.getLogger(__name__)

POLICIES_GLOB = "sys/devices/system/cpu/cpufreq/policy*/scaling_governor"


class Governor:
    """Every cpufreq policy's governor under ``root``; ``set()`` remembers what to ``restore()``."""

    def __init__(self, root: SysfsRoot) -> None:
        self.paths = root.glob(POLICIES_GLOB)  # once: policies do not come and go
        self._saved: dict[str, str] = {}

    def set(self, governor: str) -> list[str]:
        """Switch every policy to ``governor``; returns one problem line per policy that refused."""
        problems = []
        for path in self.paths:
            try:
                old = path.read_text().strip()
                if old != governor:
                    path.write_text(governor)
                    self._saved.setdefault(str(path), old)
            except OSError as e:
                problems.append(f"governor: {path}: {e.strerror or e} (needs root)")
        for line in problems:
            log.warning("event=governor_not_set %s", line)
        return problems

    def restore(self) -> None:
        """Put back every governor ``set()`` changed."""
        saved, self._saved = self._saved, {}
        for path, old in saved.items():
            try:
                with open(path, "w") as fh:
                    fh.write(old)
            except OSError as e:
                log.warning("event=governor_not_restored path=%s error=%r", path, e.strerror or str(e))
