"""Hot-plug events: udev devices of this machine's real sysfs become HwEvents; no udev means one info line."""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from nodeagent.hw.events import HwEvent
from nodeagent.hw.hotplug import HotplugMonitor, event_from_udev

UDEV_RUNNING = Path("/run/udev/control").exists()


def _pyudev() -> Any:
    return pytest.importorskip("pyudev", reason="pyudev is not installed (apt install python3-pyudev)")


def _first(pattern: str) -> Path:
    found = sorted(Path("/").glob(pattern))
    if not found:
        pytest.skip(f"no /{pattern} on this machine")
    return found[0]


# --- translation, on this machine's real devices --------------------------------------------------------------------


def test_pci_device_event() -> None:
    pyudev = _pyudev()
    path = _first("sys/bus/pci/devices/*")
    device = pyudev.Devices.from_path(pyudev.Context(), str(path))
    event = event_from_udev("add", device)
    assert event.kind == "pci.add"
    assert event.device == path.name
    assert event.message.startswith(f"pci {path.name} added (")
    assert device.properties["PCI_ID"].lower() in event.message
    if device.driver:
        assert f"driver {device.driver}" in event.message


def test_block_device_event() -> None:
    pyudev = _pyudev()
    path = _first("sys/class/block/*")
    device = pyudev.Devices.from_path(pyudev.Context(), str(path))
    event = event_from_udev("remove", device)
    assert event == HwEvent("block.remove", path.name, f"block {path.name} removed (/dev/{path.name})")


@pytest.mark.parametrize(
    ("action", "word"),
    [("change", "changed"), ("bind", "bound to its driver"), ("unbind", "unbound from its driver"), ("odd", "odd")],
)
def test_every_action_becomes_an_event(action: str, word: str) -> None:
    pyudev = _pyudev()
    path = _first("sys/class/block/*")
    event = event_from_udev(action, pyudev.Devices.from_path(pyudev.Context(), str(path)))
    assert event.kind == f"block.{action}"
    assert f"block {path.name} {word} (" in event.message


# --- where udev is absent -------------------------------------------------------------------------------------------


def test_no_udev_daemon_logs_one_info_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events: list[HwEvent] = []
    monitor = HotplugMonitor(events.append, udev_control=str(tmp_path / "control"))
    with caplog.at_level(logging.INFO, logger="nodeagent.hw.hotplug"):
        assert monitor.start() is False
        assert monitor.start() is False
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.levelno == logging.INFO
    assert f"udev is not running (no {tmp_path}/control)" in record.getMessage()
    assert not monitor.running
    monitor.stop()  # harmless when never started


@pytest.mark.skipif(UDEV_RUNNING, reason="udev runs here; the default start() watches it")
def test_default_start_without_udev_is_false() -> None:
    with HotplugMonitor(lambda e: None) as monitor:
        assert not monitor.running


def test_missing_pyudev_logs_one_info_line(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", None)  # what `import pyudev` sees without the package
    monitor = HotplugMonitor(lambda e: None, source="kernel")
    with caplog.at_level(logging.INFO, logger="nodeagent.hw.hotplug"):
        assert monitor.start() is False
    (record,) = caplog.records
    assert "pyudev/libudev unavailable" in record.getMessage()
    assert "apt install python3-pyudev" in record.getMessage()


def test_bad_source_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="source: expected 'udev' or 'kernel', got 'netlink'"):
        HotplugMonitor(lambda e: None, source="netlink")  # type: ignore[arg-type]


# --- a real monitor -------------------------------------------------------------------------------------------------


def _uevent_file() -> Path:
    """A block device's uevent file this process may write (as ``udevadm trigger`` does), or skip."""
    if os.geteuid() != 0:
        pytest.skip("writing a synthetic uevent needs root")
    path = _first("sys/class/block/*") / "uevent"
    if not os.access(path, os.W_OK):
        pytest.skip(f"{path} is not writable here")
    return path


@pytest.mark.skipif(UDEV_RUNNING, reason="with udevd running the kernel-source test would race udev's own rules")
def test_real_kernel_monitor_delivers_events(caplog: pytest.LogCaptureFixture) -> None:
    _pyudev()
    uevent = _uevent_file()
    got: list[HwEvent] = []
    arrived = threading.Event()

    def on_event(event: HwEvent) -> None:
        got.append(event)
        if len(got) == 1:
            raise RuntimeError("a broken callback")  # must not end the observer thread
        arrived.set()

    monitor = HotplugMonitor(on_event, subsystems=("block",), source="kernel")
    if not monitor.start():
        pytest.skip("netlink uevents are refused here")
    try:
        assert monitor.running
        with caplog.at_level(logging.WARNING, logger="nodeagent.hw.hotplug"):
            for _ in range(2):
                # A synthetic "change" with a fresh UUID, exactly what `udevadm trigger --action=change` sends.
                uevent.write_text(f"change {uuid.uuid4()}")
            assert arrived.wait(10.0), f"no second uevent within 10 s; got {got}"
        name = uevent.parent.name
        assert got[0] == got[1] == HwEvent("block.change", name, f"block {name} changed (/dev/{name})")
        assert any("a broken callback" in r.getMessage() for r in caplog.records)
    finally:
        monitor.stop()
    assert not monitor.running
    assert not any(t.name == "picluster-hotplug" and t.is_alive() for t in threading.enumerate())
