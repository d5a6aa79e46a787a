"""Inference: continue prompts with a trained model (`lmforge generate`).

`Generator` (generator.py) does prefill + cached decode for batches of prompts, with streaming and
stop conditions; `beam_search` (beam.py) keeps the best hypotheses; `sampling.py` holds the pure
logits -> token functions. Nothing heavy is imported here.
"""
