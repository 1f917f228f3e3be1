"""One job as the CLI, the admin page and the metrics show it, whichever queue ran it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "running", "succeeded", "failed", "cancelled",
)  # fmt: skip
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)

# procrastinate's job states, as papersift names them
FROM_PROCRASTINATE = {
    "todo": QUEUED,
    "doing": RUNNING,
    "succeeded": SUCCEEDED,
    "failed": FAILED,
    "cancelled": CANCELLED,
    "aborting": RUNNING,
    "aborted": CANCELLED,
}


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class JobInfo:
    """A job: its task and arguments, state, runs so far and last error."""

    id: int
    task: str
    args: dict[str, Any]
    status: str
    attempts: int = 0
    queue: str = "default"
    error: str | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    report: dict[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the job to end (in process only): its report, or RuntimeError."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"job {self.task} #{self.id} still {self.status}")
        if self.status != SUCCEEDED or self.report is None:
            raise RuntimeError(f"job {self.task} #{self.id} {self.status}: {self.error}")
        return self.report

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "task": self.task,
            "args": self.args,
            "status": self.status,
            "attempts": self.attempts,
            "queue": self.queue,
            "error": self.error,
            "scheduled_at": iso(self.scheduled_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }


def empty_counts() -> dict[str, int]:
    return {status: 0 for status in STATUSES}
