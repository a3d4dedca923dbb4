"""One function per user-level flow, shared by the API and the workers.

A router or a worker calls these and nothing of the flow's inside: the order of steps
(record the verdict, then teach the detectors, in one transaction) lives here once.
One module per domain, so that a process imports only the flows it runs:
:mod:`~dqpulse.services.incidents` (feedback, root cause), :mod:`~dqpulse.services.model`
(the current model, apply), :mod:`~dqpulse.services.lineage`,
:mod:`~dqpulse.services.metrics`, :mod:`~dqpulse.services.tokens`.
"""
