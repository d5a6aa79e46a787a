"""The scaling lab: sweeps over model size and data, scaling-law fits, ability tasks, reports.

`fit_*` modules own `lmforge fit` (Approach 3 and IsoFLOP fits of loss against parameters, tokens
and compute). The lab reads run dirs and sweep dirs; it never trains or evaluates by itself.
Nothing here runs at import time; each verb's module is imported only when that verb runs.
"""
