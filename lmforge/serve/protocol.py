"""The request schema of the OpenAI-compatible routes (pydantic; FastAPI turns it into OpenAPI).

Field names and meanings are OpenAI's (completions and chat completions), plus vLLM's sampling
extensions `top_k` and `ignore_eos`. Unknown fields are refused (a 400 naming them), except the
OpenAI fields listed here that are accepted only at their neutral value. `ApiError` is the one
exception the routes raise for a client's mistake; `app.py` renders it in OpenAI's error shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_N = 16
MAX_LOGPROBS = 20
MAX_STOP = 16

TokenIds = list[Annotated[int, Field(ge=0)]]


class ApiError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The body of every error response (OpenAI's shape)."""

    error: ErrorDetail


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, description="the served model's id (GET /v1/models); unset: that model (as vLLM)"
    )
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 is greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    top_k: int = Field(-1, ge=-1, description="sample among the k likeliest (-1 or 0: off)")
    n: int = Field(1, ge=1, le=MAX_N, description="choices per prompt")
    stream: bool = Field(False, description="answer as server-sent events")
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, description="strings that end a choice (not kept)")
    seed: int | None = Field(None, description="makes sampling repeatable (choice i uses seed+i)")
    ignore_eos: bool = Field(False, description="do not stop at the end-of-text token")
    user: str | None = Field(None, description="accepted and ignored")
    presence_penalty: float | None = Field(None, description="only 0 is supported")
    frequency_penalty: float | None = Field(None, description="only 0 is supported")
    logit_bias: dict[str, float] | None = Field(None, description="only an empty map is supported")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _neutral_penalty(cls, value: float | None) -> float | None:
        if value not in (None, 0, 0.0):
            raise ValueError("penalties are not supported; leave it unset or 0")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("logit_bias is not supported; leave it unset or empty")
        return value

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(s for s in stops if s)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Sampling):
    """POST /v1/completions."""

    prompt: str | list[str] | TokenIds | list[TokenIds] = Field(
        description="a string, a list of strings, a list of token ids, or a list of such lists"
    )
    max_tokens: int | None = Field(16, ge=0, description="new tokens per choice (0: none)")
    logprobs: int | None = Field(
        None, ge=0, le=MAX_LOGPROBS, description="log-probabilities of the k likeliest tokens"
    )
    echo: bool = Field(False, description="prepend the prompt (with logprobs: scored)")
    best_of: int | None = Field(None, ge=1, description="only best_of == n is supported")
    suffix: str | None = Field(None, description="not supported (unset only)")

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix is not supported")
        return value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]] = Field(description="text, or a list of text parts")
    name: str | None = None


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="new tokens (unset: to the context)")
    max_completion_tokens: int | None = Field(None, ge=1, description="same as max_tokens")
    logprobs: bool = Field(False, description="return each generated token's log-probability")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="alternatives")

    def message_dicts(self) -> list[dict[str, Any]]:
        return message_dicts(self.messages)


def message_dicts(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as the chat template sees them; OpenAI's `developer` role is the newer name of
    `system`."""
    return [
        {"role": "system" if m.role == "developer" else m.role, "content": m.content}
        for m in messages
    ]


class TokenizeRequest(BaseModel):
    """POST /tokenize: `prompt` (or llama.cpp's `content`), or chat `messages`."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    prompt: str | None = None
    content: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_generation_prompt: bool = True
    add_special_tokens: bool = Field(
        False, description="accepted for vLLM compatibility; lmforge tokenizers add none"
    )


class DetokenizeRequest(BaseModel):
    """POST /detokenize: token ids back to text."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    tokens: TokenIds
