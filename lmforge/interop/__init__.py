"""Interoperability with the Hugging Face ecosystem: `lmforge export` and `lmforge import`.

`hf.py` translates configs and weights (GPT-2 and Llama layouts), `hf_tokenizer.py` writes the
tokenizer files, `export.py` and `importer.py` are the verbs. `transformers` is never imported here.
"""
