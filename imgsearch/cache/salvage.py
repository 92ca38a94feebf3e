"""Reading captions out of a damaged caption cache (SQLite) file, page by page.

SQLite's own reader stops at the first bad page it meets on a query's path; these functions
read the file's b-tree leaf pages directly (and any -wal file beside it), skip what does not
decode, and also look for caption records by their content hash in pages whose headers are
gone. Where one key turns up more than once (an old copy in freed space), the newest wins.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterator
from pathlib import Path

_ROW = tuple[str, str, str, str, float]
_MAGIC = b"SQLite format 3\x00"
_WAL_MAGICS = (0x377F0682, 0x377F0683)
_PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)
_TABLE_LEAF = 0x0D
# A content hash (SHA-256 hex) starts every caption record: the anchor for headerless pages.
_HASH_TEXT = re.compile(rb"[0-9a-f]{64}")
# The hash's serial type: text of 64 bytes is 13 + 2 * 64 = 141, the varint 0x81 0x0d.
_HASH_SERIAL = b"\x81\x0d"
_EARLIEST, _LATEST = 946684800.0, 4102444800.0  # years 2000 and 2100: plausible creation times


def salvage_captions(path: Path) -> list[_ROW]:
    """Every caption row that can still be read from a (damaged) cache file and its -wal file."""
    data = _read_all(path)
    wal = _read_all(Path(f"{path}-wal"))
    best: dict[tuple[str, str, str], tuple[float, int, str]] = {}

    def keep(values: list[object], live: int) -> None:
        row = _as_row(values)
        if row is None:
            return
        key, rank = row[:3], (row[4], live, row[3])
        if key not in best or best[key][:2] < rank[:2]:
            best[key] = rank

    for blob in (data, wal):
        for values in _carve_records(blob):
            keep(values, 0)
    for values in _leaf_page_records(data, wal):
        keep(values, 1)
    return [(*key, caption, created) for key, (created, _, caption) in best.items()]


def _read_all(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _as_row(values: list[object]) -> _ROW | None:
    if len(values) != 5:
        return None
    *texts, created = values
    if not all(isinstance(text, str) and "\x00" not in text for text in texts) or not texts[0] or not texts[3]:
        return None
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        return None
    if not (math.isfinite(created) and _EARLIEST <= created <= _LATEST):
        return None
    return (str(texts[0]), str(texts[1]), str(texts[2]), str(texts[3]), float(created))


def _carve_records(blob: bytes) -> Iterator[list[object]]:
    """Records found by their content hash anywhere in blob, whatever the page around them."""
    for match in _HASH_TEXT.finditer(blob):
        start = match.start()
        # The record header (size, then one serial type per column) ends just before the hash.
        for header_size in range(5, 24):
            begin = start - header_size
            if begin < 0 or blob[begin] != header_size or blob[begin + 1 : begin + 3] != _HASH_SERIAL:
                continue
            try:
                values = _decode_record(blob, begin, whole=False)
            except (ValueError, IndexError, UnicodeDecodeError, struct.error):
                continue
            yield values
            break


def _leaf_page_records(data: bytes, wal: bytes) -> Iterator[list[object]]:
    """Records in the cells of every table leaf page, long ones followed onto overflow pages."""
    page_size, reserved = _geometry(data)
    if not page_size and len(wal) >= 32 and int.from_bytes(wal[:4], "big") in _WAL_MAGICS:
        page_size = int.from_bytes(wal[8:12], "big") if int.from_bytes(wal[8:12], "big") in _PAGE_SIZES else 0
    sizes = [page_size] if page_size else list(_PAGE_SIZES)
    found: list[list[object]] = []
    for size in sizes:
        # With the header gone the page size is unknown: the size that reads the most wins.
        pages = _pages(data, wal, size)
        latest = dict(pages)
        records = [values for number, page in pages for values in _page_cells(page, number, size - reserved, latest)]
        if len(records) > len(found):
            found = records
    yield from found


def _geometry(data: bytes) -> tuple[int, int]:
    """(page size, reserved bytes per page) from the file header, or (0, 0) when it is unreadable."""
    if len(data) < 100 or not data.startswith(_MAGIC):
        return 0, 0
    size = int.from_bytes(data[16:18], "big")
    size = 65536 if size == 1 else size
    reserved = data[20]
    if size not in _PAGE_SIZES or reserved >= size - 480:
        return 0, 0
    return size, reserved


def _pages(data: bytes, wal: bytes, size: int) -> list[tuple[int, bytes]]:
    """(page number, bytes) of every page in the file, then every page version in the -wal file."""
    pages = [(n // size + 1, data[n : n + size]) for n in range(0, len(data) - size + 1, size)]
    if len(wal) >= 32 and int.from_bytes(wal[:4], "big") in _WAL_MAGICS and int.from_bytes(wal[8:12], "big") == size:
        for at in range(32, len(wal) - (24 + size) + 1, 24 + size):
            number = int.from_bytes(wal[at : at + 4], "big")
            if number:
                pages.append((number, wal[at + 24 : at + 24 + size]))
    return pages


def _page_cells(page: bytes, number: int, usable: int, latest: dict[int, bytes]) -> Iterator[list[object]]:
    top = 100 if number == 1 else 0
    if page[top] != _TABLE_LEAF:
        return
    cells = int.from_bytes(page[top + 3 : top + 5], "big")
    pointers = top + 8
    if pointers + 2 * cells > usable:
        return
    for i in range(cells):
        at = int.from_bytes(page[pointers + 2 * i : pointers + 2 * i + 2], "big")
        try:
            payload = _cell_payload(page, at, usable, latest)
            yield _decode_record(payload, 0, whole=True)
        except (ValueError, IndexError, UnicodeDecodeError, struct.error):
            continue


def _cell_payload(page: bytes, at: int, usable: int, latest: dict[int, bytes]) -> bytes:
    """A table leaf cell's record bytes, gathered from its overflow pages when it has any."""
    if not 0 < at < usable:
        raise ValueError("cell outside the page")
    size, at = _varint(page, at)
    _, at = _varint(page, at)  # the rowid
    if size > 1 << 24:
        raise ValueError("implausible record size")
    max_local = usable - 35
    if size <= max_local:
        if at + size > usable:
            raise ValueError("cell runs off the page")
        return page[at : at + size]
    # SQLite's rule for how much of a long record stays on the leaf page.
    min_local = (usable - 12) * 32 // 255 - 23
    local = min_local + (size - min_local) % (usable - 4)
    if local > max_local:
        local = min_local
    payload = bytearray(page[at : at + local])
    following = int.from_bytes(page[at + local : at + local + 4], "big")
    seen: set[int] = set()
    while len(payload) < size:
        if following in seen or following not in latest:
            raise ValueError("broken overflow chain")
        seen.add(following)
        overflow = latest[following]
        following = int.from_bytes(overflow[:4], "big")
        payload += overflow[4:usable]
    return bytes(payload[:size])


def _decode_record(blob: bytes, begin: int, whole: bool) -> list[object]:
    """The column values of the SQLite record at blob[begin:] (which must end with it when whole)."""
    header_size, at = _varint(blob, begin)
    end_of_header = begin + header_size
    if header_size < 2 or end_of_header > len(blob):
        raise ValueError("bad record header")
    types = []
    while at < end_of_header:
        serial, at = _varint(blob, at)
        types.append(serial)
    if at != end_of_header or len(types) > 64:
        raise ValueError("bad record header")
    values: list[object] = []
    for serial in types:
        if serial in (0, 8, 9):
            values.append(None if serial == 0 else serial - 8)
            continue
        if 1 <= serial <= 6:
            width = (1, 2, 3, 4, 6, 8)[serial - 1]
        elif serial == 7:
            width = 8
        elif serial >= 12:
            width = (serial - 12) // 2
        else:
            raise ValueError("reserved serial type")
        chunk = blob[at : at + width]
        if len(chunk) != width:
            raise ValueError("record runs off its bytes")
        at += width
        if serial <= 6:
            values.append(int.from_bytes(chunk, "big", signed=True))
        elif serial == 7:
            values.append(struct.unpack(">d", chunk)[0])
        elif serial % 2:
            values.append(chunk.decode("utf-8"))
        else:
            values.append(bytes(chunk))
    if whole and at != len(blob):
        raise ValueError("record does not fill its cell")
    return values


def _varint(blob: bytes, at: int) -> tuple[int, int]:
    """SQLite's big-endian variable-length integer at blob[at]: (value, position after it)."""
    value = 0
    for i in range(9):
        byte = blob[at + i]
        if i == 8:
            return (value << 8) | byte, at + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    raise ValueError("unreachable")  # pragma: no cover
