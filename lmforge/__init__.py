"""lmforge: raw text to a trained, evaluated, useful language model.

The public API is small and nothing runs at import time; each pipeline stage is a library
function (`lmforge.data.prepare.run`, `lmforge.train.trainer.run`, ...) that the CLI calls.
"""

__version__ = "0.1.0"
