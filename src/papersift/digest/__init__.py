"""Daily and weekly email digests: subscriptions, composing, SMTP delivery, exactly-once runs.

Modules: ``validation`` (input rules), ``tokens`` (signed links), ``subscriptions``
(sign-up, confirm, manage, unsubscribe), ``compose`` (what goes into a digest), ``mail``
(how it is written: templates, headers, the digest message), ``smtp`` (delivery),
``ledger`` (the exactly-once record and its states), ``run`` (the loop over subscribers
and the checks before it), ``schedule`` (the in-process scheduler of ``serve --digests``),
``inbound`` (unsubscribe requests that arrive by mail). Their SQL is in
``papersift.store.subscriptions`` and ``papersift.store.ledger``.
"""
