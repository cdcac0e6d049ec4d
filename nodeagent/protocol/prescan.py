"""A check of a msgpack payload's shape before msgpack itself sees the bytes: bounded, iterative, pure.

Why: msgpack 1.0.3 (Debian 12's python3-msgpack) leaks the containers it had begun to build whenever a payload
turns out malformed, ~80 bytes per level of nesting, and a 1 KiB payload nests 1,000 levels deep. So a payload
reaches msgpack only once :func:`scan` has walked every header and found one complete document that msgpack will
decode without error: nesting at most ``MAX_DEPTH`` deep, no array or map longer than ``MAX_ITEMS``, every string
and binary inside the payload, strings valid UTF-8, map keys strings, no extension types (the protocol has none),
no reserved byte, nothing after the document. It keeps one integer per open container (at most ``MAX_DEPTH``)
and reads each byte of a header once, so its time is linear in the payload and its memory constant.
"""

from __future__ import annotations

from nodeagent.errors import ProtocolError

MAX_DEPTH = 32  # arrays and maps inside each other
MAX_ITEMS = 4096  # elements of one array, entries of one map (a cluster command names up to 1,050 nodes)

# What each first byte of a msgpack value is: (kind, n). Kinds: _SKIP n bytes follow (nil, bools, fixints,
# numbers); _FIXSTR of n bytes; _STR, _BIN, _ARRAY, _MAP with an n-byte length; _FIXARRAY, _FIXMAP of n items;
# _EXT extension types; _RESERVED 0xC1.
_SKIP, _FIXSTR, _STR, _BIN, _FIXARRAY, _ARRAY, _FIXMAP, _MAP, _EXT, _RESERVED = range(10)


def _header_table() -> tuple[tuple[int, int], ...]:
    table = [(_RESERVED, 0)] * 256
    for b in range(256):
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
            table[b] = (_SKIP, 0)
        elif b <= 0x8F:
            table[b] = (_FIXMAP, b & 0x0F)
        elif b <= 0x9F:
            table[b] = (_FIXARRAY, b & 0x0F)
        elif b <= 0xBF:
            table[b] = (_FIXSTR, b & 0x1F)
    sizes = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
    for b, n in sizes.items():
        table[b] = (_SKIP, n)
    for kind, widths in ((_STR, (0xD9, 0xDA, 0xDB)), (_BIN, (0xC4, 0xC5, 0xC6))):
        for b, n in zip(widths, (1, 2, 4), strict=True):
            table[b] = (kind, n)
    for kind, widths in ((_ARRAY, (0xDC, 0xDD)), (_MAP, (0xDE, 0xDF))):
        for b, n in zip(widths, (2, 4), strict=True):
            table[b] = (kind, n)
    for b in (0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8):
        table[b] = (_EXT, 0)
    return tuple(table)


_HEADERS = _header_table()
_KINDS = bytes(kind for kind, _ in _HEADERS)  # two flat tables index faster than one of tuples
_SIZES = bytes(n for _, n in _HEADERS)


def scan(payload: bytes, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> None:
    """Return when ``payload`` is one well-formed, bounded msgpack document; ProtocolError saying why otherwise."""
    end = len(payload)
    pos = 0
    # One entry per open container: an array's items still to read (>= 0), or minus a map's keys and values
    # still to read (a map of n entries starts at -2n, so an even count means a key comes next).
    left: list[int] = []
    kinds, sizes = _KINDS, _SIZES
    top_read = False
    while True:
        if left:
            r = left[-1]
            if r == 0:
                left.pop()
                continue
            left[-1] = r - 1 if r > 0 else r + 1
            key = r < 0 and r % 2 == 0
        elif top_read:
            break
        else:
            top_read, key = True, False
        if pos >= end:
            raise ProtocolError(f"not a msgpack message: it ends early, at byte {pos}")
        b = payload[pos]
        kind, n = kinds[b], sizes[b]
        pos += 1
        if _FIXSTR <= kind <= _STR:
            if kind == _STR:
                n, pos = _length(payload, pos, n)
            if pos + n > end:
                raise ProtocolError(f"not a msgpack message: a string of {n} bytes runs past its end")
            try:
                payload[pos : pos + n].decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(f"not a msgpack message: the string at byte {pos} is not UTF-8") from None
            pos += n
            continue
        if key:
            raise ProtocolError(f"not a protocol message: a map key at byte {pos - 1} is not a string")
        if kind == _SKIP:
            pos += n
        elif kind == _BIN:
            n, pos = _length(payload, pos, n)
            pos += n
        elif kind <= _MAP:  # arrays and maps
            if kind in (_ARRAY, _MAP):
                n, pos = _length(payload, pos, n)
            mapping = kind >= _FIXMAP
            if n > max_items:
                raise ProtocolError(f"a msgpack {'map' if mapping else 'array'} has {n} items, more than {max_items}")
            if len(left) >= max_depth:
                raise ProtocolError(f"msgpack nesting deeper than {max_depth} levels")
            left.append(-2 * n if mapping else n)
        elif kind == _EXT:
            raise ProtocolError(f"not a protocol message: msgpack extension type at byte {pos - 1}")
        else:
            raise ProtocolError(f"not a msgpack message: reserved byte 0x{b:02X} at byte {pos - 1}")
    if pos > end:
        raise ProtocolError(f"not a msgpack message: it ends early, at byte {end}")
    if pos < end:
        raise ProtocolError(f"not a msgpack message: {end - pos} bytes follow the message")


def _length(payload: bytes, pos: int, width: int) -> tuple[int, int]:
    """The big-endian length of ``width`` bytes at ``pos``, and the position after it."""
    if pos + width > len(payload):
        raise ProtocolError(f"not a msgpack message: it ends early, at byte {len(payload)}")
    return int.from_bytes(payload[pos : pos + width], "big"), pos + width
