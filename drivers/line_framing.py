"""Byte stream -> lines, bounded (pure): partial lines are kept, over-long lines are dropped and counted."""

from __future__ import annotations


class LineSplitter:
    """Splits on ``\\n``; a line over ``max_line_bytes`` (newline excluded) is discarded up to its newline."""

    def __init__(self, max_line_bytes: int) -> None:
        if max_line_bytes <= 0:
            raise ValueError("max_line_bytes must be > 0")
        self.max_line_bytes = max_line_bytes
        self.oversize = 0
        self._buffer = bytearray()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes of the unfinished line held so far."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every completed line (without ``\\n`` and one trailing ``\\r``)."""
        lines: list[bytes] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._discarding:
                self._buffer += piece
                if len(self._buffer) > self.max_line_bytes:
                    self._drop_oversize()
            if end < 0:
                return lines
            if self._discarding:
                self._discarding = False
            else:
                line = bytes(self._buffer)
                lines.append(line[:-1] if line.endswith(b"\r") else line)
            self._buffer.clear()
            start = end + 1

    def reset(self) -> int:
        """Forget any unfinished line (the link reconnected); return how many bytes were dropped."""
        dropped = len(self._buffer)
        self._buffer.clear()
        self._discarding = False
        return dropped

    def _drop_oversize(self) -> None:
        self.oversize += 1
        self._buffer.clear()
        self._discarding = True
