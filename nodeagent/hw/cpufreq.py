"""CPU frequency and governor of cpufreq policy0 (on a BCM2712 one policy covers all four Cortex-A76 cores).

``scaling_cur_freq`` is in kHz and readable by any user (``cpuinfo_cur_freq`` needs root, so it is not used).
It is the frequency the kernel asked for: when the firmware throttles, ``get_throttled`` says so, and the
two together tell the operator what happened.
"""

from __future__ import annotations

from nodeagent.errors import HardwareError
from nodeagent.hw.root import SysfsRoot, read_int_file, read_text_file

POLICY_DIR = "sys/devices/system/cpu/cpufreq"


class CpuFreq:
    """Current frequency (MHz) and governor of one cpufreq policy, ``policy0`` unless told otherwise."""

    def __init__(self, root: SysfsRoot, policy: str = "policy0") -> None:
        policy_dir = root.path(f"{POLICY_DIR}/{policy}")
        self.dir = str(policy_dir)
        self.present = policy_dir.is_dir()  # absent in most VMs and containers
        self.freq_path = str(policy_dir / "scaling_cur_freq")
        self.governor_path = str(policy_dir / "scaling_governor")

    def read_mhz(self) -> float:
        """Current frequency of the policy in MHz (``2400000`` kHz is 2400.0)."""
        self._check()
        return read_int_file(self.freq_path) / 1000.0

    def read_governor(self) -> str:
        """The scaling governor's name, e.g. ``ondemand``."""
        self._check()
        governor = read_text_file(self.governor_path)
        if not governor:
            raise HardwareError(f"{self.governor_path}: empty")
        return governor

    def _check(self) -> None:
        if not self.present:
            raise HardwareError(f"{self.dir}: not present")
