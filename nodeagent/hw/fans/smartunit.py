"""The Compute Blade smart fan unit, over the blade's UART (115200 8N1, raw; no pyserial needed).

The unit is an RP2040 with an EMC2101 fan controller. It runs the fan at the higher of the two blades' last
requests (40 % after its boot), and every 2 s sends each blade the fan's RPM and an airflow temperature; a button
press goes to the left blade (one press) or the right (two). The stock firmware has no link-loss timeout: the fan
keeps the last speed asked for, which is what makes "send 100 %" a fail-safe that outlives the agent. picluster's
firmware (``firmware/``) adds a heartbeat: after 10 s without a frame from a blade it runs the fan at 100 % and
says so (a ``Failsafe`` frame) when the blade speaks again. So the duty is re-sent every ``resend_after_s``
even when it has not changed, and the agent logs a failsafe event.

UART device: ``/dev/ttyAMA4`` on a CM5 (GPIO12/13, RP1 UART4), ``/dev/ttyAMA5`` on a CM4 (``dtoverlay=uart5``).
The CM5 overlay line is **UNCONFIRMED** (``uart4`` maps to GPIO12/13 in bcm2712-rpi.dtsi).
"""

from __future__ import annotations

import logging
import os
import select
import termios
import time
from collections.abc import Callable

from nodeagent.errors import HardwareError, ProtocolError
from nodeagent.hw import fanunit_proto as proto
from nodeagent.hw.fans.base import Fan

log = logging.getLogger(__name__)

CM5_UART = "/dev/ttyAMA4"
CM4_UART = "/dev/ttyAMA5"
REPORT_INTERVAL_S = 2.0  # how often the unit reports RPM and temperature
RESEND_AFTER_S = 2.0  # re-send the duty this often: well inside the picluster firmware's 10 s heartbeat timeout
READ_CHUNK = 4096
MAX_READS_PER_POLL = 16  # bounds one poll even if the line is flooded (a unit gone mad, a loopback wire)

_BAUD_CONSTANTS = {
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    57600: termios.B57600,
    115200: termios.B115200,
    230400: termios.B230400,
}


def open_uart(path: str, baud: int = 115200) -> int:
    """Open ``path`` raw at ``baud`` 8N1, non-blocking, without making it the controlling terminal; an fd.

    Raw matters: in the default cooked mode the line discipline would eat 0x7F (erase) and rewrite CR bytes.
    """
    if baud not in _BAUD_CONSTANTS:
        raise ValueError(f"baud: expected one of {', '.join(map(str, _BAUD_CONSTANTS))}, got {baud!r}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise HardwareError(f"smart fan unit ({path}): cannot open: {e.strerror or e}") from e
    try:
        iflag, oflag, cflag, lflag, _ispeed, _ospeed, cc = termios.tcgetattr(fd)
        iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR | termios.IGNCR)
        iflag &= ~(termios.ICRNL | termios.IXON | termios.IXOFF | termios.IXANY)
        oflag &= ~termios.OPOST
        lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
        cflag &= ~(termios.CSIZE | termios.PARENB | termios.CSTOPB | termios.CRTSCTS)
        cflag |= termios.CS8 | termios.CREAD | termios.CLOCAL
        cc[termios.VMIN] = 0
        cc[termios.VTIME] = 0
        speed = _BAUD_CONSTANTS[baud]
        termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, speed, speed, cc])
        termios.tcflush(fd, termios.TCIFLUSH)  # bytes from before we listened are half frames at best
    except (OSError, termios.error) as e:
        os.close(fd)
        raise HardwareError(f"smart fan unit ({path}): cannot set {baud} 8N1 raw: {e}") from e
    return fd


class SmartFanUnit(Fan):
    """The smart fan unit on UART ``device``.

    ``poll()`` reads whatever has arrived without blocking and updates ``rpm``, ``airflow_temp_c`` and
    ``button_presses`` (calling ``on_button`` for each press) and ``failsafe_events`` / ``last_failsafe``
    (logged). ``read_rpm()`` polls first, and is None until the unit has reported or when its last report is older
    than ``stale_after_s``; setting a duty polls too, so reports never pile up. ``duty_pct`` turns None
    ``resend_after_s`` after the last frame sent, so a caller that sets the duty only when it differs sends it
    again: the heartbeat the picluster firmware waits for. ``opener(path, baud) -> fd`` replaces ``open_uart``;
    ``clock`` is injectable.
    """

    def __init__(
        self,
        device: str = CM5_UART,
        *,
        baud: int = 115200,
        opener: Callable[[str, int], int] | None = None,
        min_duty_pct: float = 0.0,
        on_button: Callable[[], None] | None = None,
        stale_after_s: float = 3 * REPORT_INTERVAL_S,
        write_timeout_s: float = 0.5,
        resend_after_s: float = RESEND_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(f"smart fan unit ({device})", min_duty_pct=min_duty_pct)
        self.device = device
        self.on_button = on_button
        self.stale_after_s = stale_after_s
        self.write_timeout_s = write_timeout_s
        self.resend_after_s = resend_after_s
        self._clock = clock
        self._fd: int | None = (opener or open_uart)(device, baud)
        self.decoder = proto.Decoder()
        self.rpm: int | None = None
        self.airflow_temp_c: float | None = None
        self.button_presses = 0
        self.unknown_frames = 0
        self.failsafe_events = 0
        self.last_failsafe: proto.Failsafe | None = None
        self._rpm_t: float | None = None
        self._sent_t: float | None = None

    # --- reading ---------------------------------------------------------------------------------------------------

    def _read_available(self, timeout_s: float = 0.0) -> bytes:
        """Bytes waiting on the UART (after waiting up to ``timeout_s`` for the first); b"" when none."""
        fd = self._require_fd()
        try:
            ready, _, _ = select.select([fd], [], [], max(timeout_s, 0.0))
            if not ready:
                return b""
            return os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return b""
        except OSError as e:
            raise HardwareError(f"{self.name}: read failed: {e.strerror or e}") from e

    def poll(self) -> int:
        """Handle every frame that has arrived; never blocks. Returns the number of frames handled."""
        handled = 0
        for _ in range(MAX_READS_PER_POLL):
            chunk = self._read_available()
            if not chunk:
                break
            handled += self._handle(chunk)
        return handled

    def _handle(self, chunk: bytes) -> int:
        frames = self.decoder.feed(chunk)
        now = self._clock()
        for frame in frames:
            try:
                msg = proto.parse_frame(frame)
            except ProtocolError as e:
                self.unknown_frames += 1
                log.warning("smart fan unit: ignored frame device=%s reason=%r", self.device, str(e))
                continue
            if isinstance(msg, proto.FanRpm):
                self.rpm = round(msg.rpm)
                self._rpm_t = now
            elif isinstance(msg, proto.AirflowTemp):
                self.airflow_temp_c = msg.temp_c
            elif isinstance(msg, proto.ButtonPress):
                self.button_presses += 1
                self._call_on_button()
            elif isinstance(msg, proto.Failsafe):
                self._failsafe(msg)
            # SetFanPercent/SetLed only travel blade -> unit; one arriving here is an echo, and harmless.
        return len(frames)

    def _failsafe(self, msg: proto.Failsafe) -> None:
        self.failsafe_events += 1
        self.last_failsafe = msg
        # Silence since the unit started is every boot's story (the unit is up before the agent); a blade that
        # spoke and then fell silent means this agent stalled or lost its UART: worth a warning.
        level = logging.INFO if msg.reason == proto.FAILSAFE_NEVER_HEARD else logging.WARNING
        why = {proto.FAILSAFE_HEARTBEAT_LOST: "heartbeat_lost", proto.FAILSAFE_NEVER_HEARD: "not_heard_since_boot"}
        log.log(
            level,
            "event=fan_unit_failsafe device=%s reason=%s silent_s=%d — the unit ran the fan at 100 %% without us",
            self.device,
            why.get(msg.reason, f"code_{msg.reason}"),
            msg.silent_s,
        )

    def _call_on_button(self) -> None:
        if self.on_button is None:
            return
        try:
            self.on_button()
        except Exception as e:  # a handler's bug must not stop the fan reports
            log.error("smart fan unit: on_button failed device=%s error=%r", self.device, str(e))

    def detect(self, timeout_s: float = 3.0) -> bool:
        """Listen up to ``timeout_s`` seconds; True as soon as a start byte (0x7E) arrives.

        The unit reports every 2 s, so 3 s is enough to hear it; what is read is kept for the decoder.
        """
        deadline = self._clock() + timeout_s
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            chunk = self._read_available(remaining)
            if chunk:
                self._handle(chunk)
                if proto.SOF in chunk:
                    return True

    def read_rpm(self) -> int | None:
        """The last RPM the unit reported; None before its first report or after ``stale_after_s`` of silence."""
        self.poll()
        if self._rpm_t is None or self._clock() - self._rpm_t > self.stale_after_s:
            return None
        return self.rpm

    # --- writing ---------------------------------------------------------------------------------------------------

    @property
    def duty_pct(self) -> float | None:
        """The duty last sent, for ``resend_after_s`` after the last frame; None before and after that."""
        if self._sent_t is None or self._clock() - self._sent_t >= self.resend_after_s:
            return None
        return self._duty_pct

    def _send(self, data: bytes) -> None:
        fd = self._require_fd()
        deadline = self._clock() + self.write_timeout_s
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                written = 0
            except OSError as e:
                raise HardwareError(f"{self.name}: write failed: {e.strerror or e}") from e
            view = view[written:]
            if view:
                if self._clock() >= deadline:
                    raise HardwareError(f"{self.name}: write timed out after {self.write_timeout_s} s (UART stuck?)")
                select.select([], [fd], [], max(deadline - self._clock(), 0.0))
        self._sent_t = self._clock()

    def _apply_duty(self, pct: float) -> None:
        self.poll()  # the agent asks for the RPM rarely: drain the unit's reports (and a failsafe event) here
        self._send(proto.set_fan_percent(pct))

    def _apply_full(self) -> None:
        self._send(proto.set_fan_percent(100))
        try:
            termios.tcdrain(self._require_fd())  # the fail-safe may exit next: let the bytes leave first
        except (OSError, termios.error) as e:
            raise HardwareError(f"{self.name}: could not drain the UART: {e}") from e

    def set_led(self, red: int, green: int, blue: int) -> None:
        """Set this blade's LED on the unit (0–255 each)."""
        self._send(proto.set_led(red, green, blue))

    def fileno(self) -> int:
        """The UART's file descriptor, for a caller that waits on it with select/poll before calling ``poll()``."""
        return self._require_fd()

    def _require_fd(self) -> int:
        if self._fd is None:
            raise HardwareError(f"{self.name}: closed")
        return self._fd

    def close(self) -> None:
        """Close the UART; the unit keeps running the fan at the last speed asked for."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
