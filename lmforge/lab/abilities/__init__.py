"""Abilities that appear with scale: synthetic tasks, their metrics and their training.

`tasks.py` generates modular arithmetic, multi-digit addition and induction data from a seed
(train and test disjoint by construction); `metrics.py` scores answers by exact match beside
four continuous metrics; `runner.py` trains a sweep point on a task (`[ability]` sweeps).
"""
