"""Firmware for the Compute Blade smart fan unit's RP2040, in MicroPython (see ../README.md).

``main.py`` on the device runs ``fanunit.app.run()``. Every module but ``board`` is plain Python that never
touches ``machine``, so the host tests run it under CPython.
"""
