"""The unit's WS2812 LEDs: colours per blade into the bytes the chain wants."""

ORDERS = ("RGB", "RBG", "GRB", "GBR", "BRG", "BGR")


def chain_bytes(colours: dict, chain: tuple, order: str = "GRB") -> bytes:
    """The bytes for a chain of LEDs: ``chain`` names the blade of each LED, first LED first.

    ``colours`` maps a blade to ``(red, green, blue)``; ``order`` is the LEDs' byte order (WS2812: GRB).
    """
    if order not in ORDERS:
        raise ValueError("LED byte order must be one of {}, got {!r}".format(", ".join(ORDERS), order))
    out = bytearray()
    for name in chain:
        red, green, blue = colours.get(name, (0, 0, 0))
        channel = {"R": red, "G": green, "B": blue}
        for letter in order:
            out.append(channel[letter] & 0xFF)
    return bytes(out)
