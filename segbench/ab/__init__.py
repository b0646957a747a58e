"""``segbench ab``: two commits (or two Python environments) timed on one machine, passes interleaved.

``git.py`` finds the repository and checks refs out into temporary worktrees, ``worker.py`` is the side
process (a gated ``segbench run``), ``session.py`` is the driver: it starts the sides, runs their passes in
a balanced order with the noise sentinel read between them, and judges the result with
``segbench.reports.paired``.
"""
