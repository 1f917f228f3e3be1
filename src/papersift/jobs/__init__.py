"""Background work: mail, digests, the index catch-up, snapshot publishing, the daily job.

Each job is a plain function of (settings, database, plain keyword values) in
``jobs.tasks``; ``jobs.queue`` runs it on procrastinate's PostgreSQL queue (``papersift
worker``) or in this process (SQLite), chosen by the database URL or the ``queue``
setting. Callers say ``enqueue(settings, db, "mail.deliver", ids=[7])`` and never know
which.
"""

from papersift.jobs.queue import JobQueue, close_queues, enqueue, open_queue, queue_for
from papersift.jobs.runner import JOBS, InProcessRunner, run_job

__all__ = [
    "JOBS",
    "InProcessRunner",
    "JobQueue",
    "close_queues",
    "enqueue",
    "open_queue",
    "queue_for",
    "run_job",
]
