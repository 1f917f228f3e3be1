"""Daily and weekly email digests: subscriptions, composing, SMTP delivery, exactly-once runs.

Modules: ``validation`` (input rules), ``tokens`` (signed links), ``subscriptions``
(sign-up, confirm, manage, unsubscribe), ``compose`` (what goes into a digest and the
message), ``mail`` (templates and headers), ``smtp`` (delivery), ``run`` (the ledger and
the run loop), ``schedule`` (the optional in-process scheduler of ``serve --digests``).
"""
