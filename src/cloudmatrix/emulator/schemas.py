"""The request bodies the emulator's API accepts (OpenAI's chat and completion schemas, the fields it uses;
sampling fields are accepted and ignored, but log probabilities, which the twin cannot make up honestly, are
refused by name). vLLM's ``ignore_eos`` and ``min_tokens`` steer the simulated end-of-sequence."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloudmatrix.catalog.strict import StrictModel

MAX_TOKENS_LIMIT = 32768
MAX_CHOICES = 8  # `n`: each choice is its own simulated sequence, as a serving engine runs them


class RequestBody(StrictModel):
    model_config = ConfigDict(extra="allow")  # sampling fields are accepted and ignored

    model: str
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    ignore_eos: bool = False  # vLLM's: run to max_tokens, past the simulated end-of-sequence
    min_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS_LIMIT)  # vLLM's: no end-of-sequence before this

    def logprobs_asked(self) -> str | None:
        """The log-probability field this request sets, if any (the server answers 400: it has no model to
        score tokens with, and a made-up or null value would mislead)."""
        extra = self.model_extra or {}
        for name in ("logprobs", "top_logprobs", "prompt_logprobs"):
            if extra.get(name) is not None and extra.get(name) is not False:
                return name
        return None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))

    @property
    def continuous_usage(self) -> bool:
        """vLLM's ``stream_options.continuous_usage_stats``: usage so far on every chunk (with include_usage)."""
        return self.include_usage and bool(self.stream_options and self.stream_options.get("continuous_usage_stats"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(str(part.get("text", "")) for part in self.content)
        return self.content or ""


class ChatBody(RequestBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)


class CompletionBody(RequestBody):
    prompt: str | list[str]


class TokenizeBody(BaseModel):
    """vLLM's /tokenize: a completion ``prompt`` or chat ``messages`` (``model`` optional, as there)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    return_token_strs: bool = False


class DetokenizeBody(BaseModel):
    """vLLM's /detokenize: token ids back to text."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    tokens: list[int] = Field(max_length=MAX_TOKENS_LIMIT * 8)
