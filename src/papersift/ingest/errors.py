"""The one error type every parser raises, so callers report bad input uniformly."""

from __future__ import annotations


class IngestError(Exception):
    """Input that cannot be ingested, with where it was found (file, line or record)."""

    def __init__(self, message: str, *, source: str = "", location: str = "") -> None:
        self.message = message
        self.source = source
        self.location = location
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source
        if self.location:
            where = f"{where}, {self.location}" if where else self.location
        return f"{where}: {self.message}" if where else self.message

    def at(self, source: str | None = None, location: str | None = None) -> IngestError:
        """Fill in the place when a lower layer raised without knowing it."""
        if source and not self.source:
            self.source = source
        if location and not self.location:
            self.location = location
        return self
