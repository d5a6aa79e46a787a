"""Evaluation: intrinsic metrics (`perplexity.py`), likelihood scoring (`likelihood.py`), tasks.

`lmforge eval` lives in `run.py`, the task registry in `tasks/`, reports in `report.py`. Nothing
is imported here, so `import lmforge.eval.metrics` stays light.
"""
