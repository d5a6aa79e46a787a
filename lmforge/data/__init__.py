"""Data: sources -> cleaning -> tokenizer -> shards, and the reader the trainer uses.

Light on purpose: importing `lmforge.data` loads nothing heavy; import the submodule you need
(`lmforge.data.reader.DataDir`, `lmforge.data.tokenizer.Tokenizer`, `lmforge.data.prepare`).
"""
