"""Background work as plain functions: each job takes its inputs explicitly (settings, a
database, plain values) and keeps no state of its own, so the in-process runner here and
a job queue in a worker process run the same code.

- ``daily``: the day's job (harvest, index, digests, outbox), ``jobs.daily.run_daily``.
- ``mail.deliver``: deliver waiting outbox mails, ``papersift.digest.outbox.deliver``.
"""

from papersift.jobs.runner import JOBS, InProcessRunner, run_job

__all__ = ["JOBS", "InProcessRunner", "run_job"]
