"""The unit's loop: blades' bytes in, decisions from ``control``, hardware out through ``board``.

``App.step(now_ms)`` is one pass and takes the time as an argument, so the host tests drive it with their own
clock. ``run()`` is the device's endless loop (``main.py`` calls it).
"""

from fanunit import leds, proto
from fanunit.button import PressCounter, target
from fanunit.control import FULL, Controller


class App:
    """One fan unit: ``board`` (the hardware, or the tests' stand-in) run as ``cfg`` (``fanunit.config``) says."""

    def __init__(self, board: object, cfg: object, now_ms: int) -> None:
        self.board = board
        self.cfg = cfg
        names = tuple(link[0] for link in cfg.LINKS)
        self.sensors = {link[0]: link[4] for link in cfg.LINKS}
        self.control = Controller(names, cfg.EXPECTED_LINKS, cfg.HEARTBEAT_TIMEOUT_MS, now_ms, cfg.FAILSAFE_RGB)
        self.button = PressCounter(cfg.BUTTON_DEBOUNCE_MS, cfg.BUTTON_WINDOW_MS)
        self.fan_percent = None  # the duty the fan was last set to
        self.fan_set_ms = now_ms
        self.fan_errors = 0  # consecutive failures to reach the fan controller
        self.step_errors = 0
        self.led_bytes = None
        self.next_report_ms = now_ms
        self._drive_fan(now_ms)  # boot default: 100 % until the blades speak
        self._show_leds()

    def step(self, now_ms: int) -> None:
        """One pass: read the blades, decide, drive the fan and LEDs, handle the button, report when due."""
        for name in self.control.links:
            data = self.board.read(name)
            if data:
                for reply in self.control.receive(name, data, now_ms):
                    self.board.write(name, reply)
        self.control.update(now_ms)
        self._drive_fan(now_ms)
        self._show_leds()
        presses = self.button.sample(self.board.button_pressed(), now_ms)
        if presses:
            self.board.write(target(presses, self.cfg.BUTTON_TARGETS), proto.button_press())
        if now_ms >= self.next_report_ms:
            self.next_report_ms = now_ms + self.cfg.REPORT_INTERVAL_MS
            self._report(now_ms)
        self.board.set_status(self.control.failsafe_active())
        self.board.feed()

    def _drive_fan(self, now_ms: int) -> None:
        percent = self.control.fan_percent()
        if percent == self.fan_percent and now_ms - self.fan_set_ms < self.cfg.FAN_REASSERT_MS:
            return
        try:
            self.board.set_fan(percent)
        except OSError as e:
            self._fan_error(e)
            return
        self.fan_percent = percent
        self.fan_set_ms = now_ms
        self.fan_errors = 0

    def _fan_error(self, e: Exception) -> None:
        self.fan_errors += 1
        print(f"fanunit: fan controller error {self.fan_errors}: {e!r}")
        if self.fan_errors >= self.cfg.I2C_ERRORS_BEFORE_RESET:
            self.board.reset()  # the stock firmware's cure for a locked I2C bus; the unit boots at 100 %

    def _show_leds(self) -> None:
        colours = {}
        for name in self.control.links:
            colours[name] = self.control.led(name)
        data = leds.chain_bytes(colours, self.cfg.LED_CHAIN, self.cfg.LED_BYTE_ORDER)
        if data != self.led_bytes:
            self.board.show_leds(data)
            self.led_bytes = data

    def _report(self, now_ms: int) -> None:
        try:
            rpm = self.board.rpm(now_ms)
            temps = self.board.temperatures()
        except OSError as e:
            self._fan_error(e)
            return
        for name in self.control.links:
            if rpm is not None:
                self.board.write(name, proto.fan_rpm(rpm))
            temp = temps.get(self.sensors[name])
            if temp is not None:
                self.board.write(name, proto.airflow_temp(temp))

    def fail_safe(self) -> None:
        """Fan to 100 % after an unexpected error, without raising."""
        try:
            self.board.set_fan(FULL)
            self.fan_percent = FULL
        except Exception as e:  # the controller itself may be what failed; the watchdog and retries remain
            print(f"fanunit: fan to full failed: {e!r}")


class TicksClock:
    """Milliseconds since start, from MicroPython's wrapping ``time.ticks_ms`` (``time_module`` is ``time``)."""

    def __init__(self, time_module: object) -> None:
        self._time = time_module
        self._last = time_module.ticks_ms()
        self._ms = 0

    def now_ms(self) -> int:
        t = self._time.ticks_ms()
        self._ms += self._time.ticks_diff(t, self._last)
        self._last = t
        return self._ms

    def sleep_ms(self, ms: int) -> None:
        self._time.sleep_ms(ms)


def run(cfg: object = None, board: object = None, clock: object = None, steps: int | None = None) -> App:
    """The unit's main loop (forever unless ``steps`` is given). Defaults: ``fanunit.config``, the real board,
    MicroPython's clock. An error in one pass is printed, the fan set to full, and the loop goes on; a hang is
    the hardware watchdog's."""
    if cfg is None:
        from fanunit import config as cfg
    if clock is None:
        import time

        clock = TicksClock(time)
    now = clock.now_ms()
    if board is None:
        from fanunit.board import Board

        board = Board(cfg, now)
    app = App(board, cfg, now)
    done = 0
    while steps is None or done < steps:
        try:
            app.step(clock.now_ms())
        except Exception as e:  # one bad pass must not leave the fan where it was
            app.step_errors += 1
            print(f"fanunit: step failed: {e!r}")
            app.fail_safe()
        clock.sleep_ms(cfg.LOOP_INTERVAL_MS)
        done += 1
    return app
