"""`lmforge serve`: an OpenAI-compatible HTTP API over one run, with continuous batching.

`engine.py` owns the model and schedules every active request into one decode batch per step;
`sampling.py` samples each row with its own settings and seeded generator; `protocol.py` is the
request/response schema (pydantic, hence the OpenAPI document); `app.py` the routes (FastAPI,
SSE streams); `metrics.py` the Prometheus counters; `verb.py` the CLI verb; `playground.html` the
page served at `/`. Nothing here is imported by lower layers.
"""
