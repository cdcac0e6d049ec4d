"""Every sysfs and procfs path the agent reads, taken relative to one root directory.

On a node the root is ``/``. In tests it is a recorded tree such as ``tests/data/sysfs/cm5-nanocluster``, so the same
reader code runs against a real CM5 and against a copy of one. Devices are found by what they are (hwmon ``name``,
thermal-zone ``type``), never by their number, and each lookup is done once: the per-tick reads open fixed paths.
"""

from __future__ import annotations

import re
from pathlib import Path

from nodeagent.errors import HardwareError

_DECIMAL = re.compile(r"-?[0-9]+")
_HWMON_DIR = "sys/class/hwmon"
_THERMAL_DIR = "sys/class/thermal"


def read_text_file(path: str | Path) -> str:
    """Contents of one small sysfs/procfs file, stripped of whitespace and trailing NULs.

    Raises ``HardwareError("<path>: <cause>")``, e.g. ``/sys/class/thermal/thermal_zone0/temp: Permission denied``.
    """
    try:
        # Binary mode and one read(): sysfs files are a single page, and this is the cheapest way to get it.
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise HardwareError(f"{path}: {e.strerror or e}") from e
    return data.decode("utf-8", "replace").strip().rstrip("\0").strip()


def read_int_file(path: str | Path) -> int:
    """A sysfs file holding one decimal integer (``52350``). Garbage raises ``HardwareError`` naming the path."""
    text = read_text_file(path)
    if not _DECIMAL.fullmatch(text):
        raise HardwareError(f"{path}: expected a decimal integer, got {text[:40]!r}")
    return int(text)


class SysfsRoot:
    """A directory that stands for ``/``: on a node ``SysfsRoot("/")``, in tests a recorded tree.

    Paths given to its methods are relative to the root; a leading ``/`` is ignored, so
    ``root.read_text("/proc/loadavg")`` and ``root.read_text("proc/loadavg")`` read the same file.
    ``find_hwmon()`` and ``find_thermal_zone()`` scan their class directory once and remember the answer;
    call ``forget()`` after a device was hot-plugged to scan again.
    """

    def __init__(self, root: str | Path = "/") -> None:
        self._root = Path(root)
        self._hwmon: dict[str, Path] | None = None
        self._zones: dict[str, Path] | None = None

    def __repr__(self) -> str:
        return f"SysfsRoot({str(self._root)!r})"

    @property
    def root(self) -> Path:
        """The directory standing for ``/``."""
        return self._root

    def path(self, rel: str | Path) -> Path:
        """The real path of ``rel`` under this root."""
        return self._root / str(rel).lstrip("/")

    def read_text(self, rel: str | Path) -> str:
        """Stripped contents of ``rel``; raises ``HardwareError`` naming the path and the cause."""
        return read_text_file(self.path(rel))

    def read_int(self, rel: str | Path) -> int:
        """The decimal integer in ``rel``; raises ``HardwareError`` on a missing, unreadable or garbage file."""
        return read_int_file(self.path(rel))

    def exists(self, rel: str | Path) -> bool:
        """Whether ``rel`` exists under the root (following symlinks, as sysfs class links must be)."""
        return self.path(rel).exists()

    def glob(self, pattern: str) -> list[Path]:
        """Paths matching ``pattern`` under the root, sorted. For start-up discovery only, never per tick."""
        return sorted(self._root.glob(pattern.lstrip("/")))

    def find_hwmon(self, name: str) -> Path | None:
        """The ``sys/class/hwmon/hwmonN`` directory whose ``name`` file says ``name``, or None.

        hwmon numbers change with probe order from boot to boot, so the number is never used. When several
        devices share a name (two NVMe drives), the lowest-numbered one is returned.
        """
        if self._hwmon is None:
            self._hwmon = self._index(_HWMON_DIR, "hwmon", "name")
        return self._hwmon.get(name)

    def find_thermal_zone(self, type_: str) -> Path | None:
        """The ``sys/class/thermal/thermal_zoneN`` directory whose ``type`` file says ``type_``, or None."""
        if self._zones is None:
            self._zones = self._index(_THERMAL_DIR, "thermal_zone", "type")
        return self._zones.get(type_)

    def forget(self) -> None:
        """Drop the remembered hwmon and thermal-zone lookups, so the next find scans again."""
        self._hwmon = None
        self._zones = None

    def _index(self, class_dir: str, prefix: str, key_file: str) -> dict[str, Path]:
        """Map each device's ``key_file`` contents to its class path, lowest number first.

        A device whose key file cannot be read is skipped: it cannot be the one asked for, and one odd
        device must not hide the others.
        """
        entries = []
        for entry in self.path(class_dir).glob(f"{prefix}*"):
            suffix = entry.name[len(prefix) :]
            if suffix.isdigit():
                entries.append((int(suffix), entry))
        index: dict[str, Path] = {}
        for _, entry in sorted(entries):
            try:
                key = read_text_file(entry / key_file)
            except HardwareError:
                continue
            index.setdefault(key, entry)
        return index
