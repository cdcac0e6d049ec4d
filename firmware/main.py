# The fan unit's entry point: MicroPython runs main.py at boot. Everything else is in fanunit/.
from fanunit.app import run

run()
