"""The bytes of one input file, streamed: local or S3, gzip or plain, with faults reported where they happen.

A truncated or corrupt ``.gz`` must not take the records before the fault with it (nor stop the stage), so
gzip is decompressed here with ``zlib`` rather than ``gzip.GzipFile``: every byte decompressed before the
fault is handed on, then ``StreamFault`` says what broke and where (compressed and decompressed offsets).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import BinaryIO

from lmpipe.sources import Unit, filesystem

CHUNK = 1 << 20  # compressed bytes read per call
MAX_INFLATE = 8 << 20  # decompressed bytes per zlib call: bounds memory on highly compressed input
GZIP_WBITS = 31  # zlib: gzip header and trailer (CRC-32 and length are checked)


class StreamFault(Exception):
    """A unit's byte stream breaks off. ``reason``: 'truncated' or 'corrupt'; ``detail`` names the offsets.

    Line readers add ``line`` (the number of the line cut off) and ``partial`` (its bytes so far).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail
        self.line = 0
        self.partial = b""


def open_raw(unit: Unit) -> BinaryIO:
    fs = filesystem(unit.source)
    return fs.open(unit.path, "rb") if fs is not None else open(unit.path, "rb")  # noqa: SIM115


def chunks(unit: Unit) -> Iterator[bytes]:
    """The unit's (decompressed) bytes in pieces; raises ``StreamFault`` after the last good piece."""
    with open_raw(unit) as f:
        if unit.path.endswith(".gz"):
            yield from gunzip(f)
        else:
            while block := f.read(CHUNK):
                yield block


def gunzip(f: BinaryIO) -> Iterator[bytes]:
    """Decompress a gzip file of one or more members (zero padding between members is skipped, as gzip does)."""
    d = zlib.decompressobj(wbits=GZIP_WBITS)
    offset = produced = 0  # compressed bytes consumed, decompressed bytes yielded
    in_member = False
    while block := f.read(CHUNK):
        data = block
        while data:
            if not in_member:
                stripped = data.lstrip(b"\x00")
                offset += len(data) - len(stripped)
                data = stripped
                if not data:
                    break
                in_member = True
            try:
                out = d.decompress(data, MAX_INFLATE)
            except zlib.error as e:
                raise StreamFault(
                    "corrupt",
                    f"gzip data error ({e}) in compressed bytes {offset}-{offset + len(data)}, "
                    f"after {produced} decompressed bytes",
                ) from None
            if d.eof:
                rest = d.unused_data
                d, in_member = zlib.decompressobj(wbits=GZIP_WBITS), False
            else:
                rest = d.unconsumed_tail
            offset += len(data) - len(rest)
            if out:
                produced += len(out)
                yield out
            data = rest
    if in_member:
        out = d.flush()  # output held back by MAX_INFLATE; reaching the end marker here sets eof
        if out:
            produced += len(out)
            yield out
    if in_member and not d.eof:
        raise StreamFault(
            "truncated",
            f"gzip stream ends at compressed byte {offset} before its end marker, "
            f"after {produced} decompressed bytes",
        )


def collect(pieces: Iterator[bytes]) -> tuple[bytes, StreamFault | None]:
    """All of ``pieces`` joined, or what came before a fault and the fault."""
    parts: list[bytes] = []
    try:
        for block in pieces:
            parts.append(block)
    except StreamFault as fault:
        return b"".join(parts), fault
    return b"".join(parts), None


def read_all(unit: Unit) -> tuple[bytes, StreamFault | None]:
    """The whole unit, or what could be read of it and the fault that stopped it."""
    return collect(chunks(unit))


def lines(pieces: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """``(line number from 1, line without b'\\n')``; a fault is re-raised with the cut-off line attached."""
    n = 0
    carry: list[bytes] = []  # the unfinished line, kept as parts so a long line is not copied repeatedly
    try:
        for block in pieces:
            split = block.split(b"\n")
            if len(split) == 1:
                carry.append(block)
                continue
            carry.append(split[0])
            split[0] = b"".join(carry)
            carry = [split.pop()]
            for line in split:
                n += 1
                yield n, line
    except StreamFault as fault:
        fault.line, fault.partial = n + 1, b"".join(carry)
        raise
    last = b"".join(carry)
    if last:
        yield n + 1, last
