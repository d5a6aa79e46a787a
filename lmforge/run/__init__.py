"""The run dir: the contract every verb that reads or writes a trained model shares.

`rundir.py` names its files and loads or creates one (`load_run`, `create_run_dir`);
`checkpoint.py` writes checkpoints atomically with checksums and `latest`/`best` pointers;
`lock.py` is the writer's lock; `config.py` is the schema of its `config.toml` (TrainConfig);
`tokenizer_config.py` is the tokenizer's `tokenizer_config.json` (chat template). Nothing here
trains or generates.
"""
