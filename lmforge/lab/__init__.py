"""The scaling lab: sweeps over model size and data, scaling-law fits, ability tasks, reports.

`sweep*` own `lmforge sweep` (a grid of run dirs, trained through `lmforge.executor`, indexed in
sweep.json); `fit_*` own `lmforge fit` (Approach 3 and IsoFLOP fits); `abilities/` the synthetic
tasks, their metrics and their training; `inspect` attention maps, prefix matching and the logit
lens; `report*` own `lmforge report`. Nothing here runs at import time; each verb's module is
imported only when that verb runs.
"""
