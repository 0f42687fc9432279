"""The OpenAI-compatible HTTP API: /v1/models, /v1/completions, /v1/chat/completions (streaming over SSE and
not), /health and /metrics. Errors use OpenAI's body: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudmatrix.catalog.sourced import describe_validation_error
from cloudmatrix.emulator.engine import RealtimeEngine, Stream
from cloudmatrix.emulator.http_errors import ApiError, ServerDraining, add_error_handlers, has_lone_surrogate
from cloudmatrix.emulator.metrics import Metrics
from cloudmatrix.emulator.text import Filler, chat_text, count_chat_tokens, count_tokens
from cloudmatrix.inputs import MAX_DEPTH, depth
from cloudmatrix.serving.requests import State

MAX_TOKENS_LIMIT = 32768


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    model_id: str
    api_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    seed: int = 0


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # sampling fields are accepted and ignored

    model: str
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    n: int = Field(default=1, ge=1, le=1)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(str(part.get("text", "")) for part in self.content)
        return self.content or ""


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)


class CompletionBody(_Body):
    prompt: str | list[str]


def create_app(engine: RealtimeEngine, config: ServeConfig) -> FastAPI:
    metrics = Metrics(lambda: engine.outstanding, engine.queue_depth, engine.kv_occupancy, engine.cache_hit_rate)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="cloudmatrix emulator", lifespan=lifespan)

    add_error_handlers(app, metrics)

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, f"Bearer {config.api_key}".encode("utf-8", "surrogateescape")):
            raise ApiError(401, "Incorrect or missing API key.", "authentication_error", code="invalid_api_key")

    async def body_bytes(request: Request) -> bytes:
        """The body, refused (413) as soon as it passes the limit, whatever its Content-Length says."""
        limit = config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"Request body of {declared} bytes exceeds the {limit}-byte limit.")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"Request body exceeds the {limit}-byte limit.")
            chunks.append(chunk)
        return b"".join(chunks)

    async def read(request: Request, schema: type[_Body]) -> _Body:
        authorize(request)
        if engine.draining:
            raise ApiError(503, "The server is shutting down.", "server_error", code="server_shutdown")
        raw = await body_bytes(request)
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"Request body is not valid JSON: {e}") from None
        except RecursionError:
            raise ApiError(400, f"Request body is nested more than {MAX_DEPTH} levels deep.") from None
        if not isinstance(data, dict):
            raise ApiError(400, "Request body must be a JSON object.")
        if depth(data) > MAX_DEPTH:
            raise ApiError(400, f"Request body is nested more than {MAX_DEPTH} levels deep.")
        if has_lone_surrogate(data):
            raise ApiError(400, "Request body holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text.")
        try:
            body = schema.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            raise ApiError(400, describe_validation_error(e), param=".".join(str(p) for p in first["loc"])) from None
        if body.model != config.model_id:
            raise ApiError(
                404,
                f"The model '{body.model}' does not exist; this server serves '{config.model_id}'.",
                param="model",
                code="model_not_found",
            )
        if engine.outstanding >= engine.max_outstanding:
            retry = engine.retry_after_s()
            raise ApiError(
                429,
                f"{engine.outstanding} requests in flight: the deployment admits "
                f"{engine.max_outstanding}. Retry after {retry} s.",
                "rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry)},
            )
        return body

    def usage(stream: Stream) -> dict[str, int]:
        return {
            "prompt_tokens": stream.prompt_tokens,
            "completion_tokens": stream.generated,
            "total_tokens": stream.prompt_tokens + stream.generated,
        }

    async def tokens(request: Request, stream: Stream) -> AsyncGenerator[tuple[int, float], None]:
        """Token batches as the simulation releases them; cancels the simulated request if the client leaves."""
        started = stream.arrived  # TTFT counts from the request's arrival, not from the first byte of the body
        last: float | None = None
        finished = False
        try:
            while True:
                item = await stream.queue.get()
                if item is None:
                    finished = True
                    return
                if isinstance(item, str):  # SHUTDOWN: the drain deadline passed
                    raise ServerDraining()
                n, sim_t = item
                if last is None:
                    metrics.ttft.observe(time.perf_counter() - started)  # wall clock: the HTTP queue is real
                    for _ in range(n - 1):  # tokens that came with the first: no wait of their own
                        metrics.tpot.observe(0.0)
                else:
                    # the emulated deployment's pace (simulated seconds in wall seconds), not this host's
                    # scheduling jitter; token-weighted: a chunk of k tokens is k observations
                    per_token = (sim_t - last) / engine.speed / n
                    for _ in range(n):
                        metrics.tpot.observe(per_token)
                last = sim_t
                metrics.generated_tokens.inc(item[0])
                yield item
        finally:
            if not finished:
                engine.cancel(stream)

    async def complete(request: Request, stream: Stream) -> str:
        """Collect the whole answer, watching for a client that disconnects meanwhile."""
        filler = Filler(config.seed, stream.rid)
        parts: list[str] = []
        agen = tokens(request, stream)
        try:
            while True:
                task = asyncio.ensure_future(agen.__anext__())
                while not task.done():
                    await asyncio.wait({task}, timeout=0.5)
                    if not task.done() and await request.is_disconnected():
                        task.cancel()
                        raise ApiError(499, "client closed the request")
                n, _ = task.result()
                parts.append(filler.words(n))
        except StopAsyncIteration:
            return "".join(parts)
        except ServerDraining:
            raise ApiError(503, "The server is shutting down.", "server_error", code="server_shutdown") from None
        finally:
            await agen.aclose()

    def sse(payload: dict[str, Any] | str) -> str:
        return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"

    async def stream_events(
        request: Request, stream: Stream, body: _Body, chat: bool, rid: str, created: int
    ) -> AsyncIterator[str]:
        filler = Filler(config.seed, stream.rid)
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = (
                    {"role": "assistant", "content": ""} if role else {} if text is None else {"content": text}
                )
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
            return {"id": rid, "object": obj, "created": created, "model": config.model_id, "choices": [choice]}

        # Token chunks differ only in their text: format the rest once (this is the server's hot path).
        head, tail = sse(chunk("\x00", None)).split(json.dumps("\x00"))
        if chat:
            yield sse(chunk(None, None, role=True))
        try:
            async for n, _ in tokens(request, stream):
                yield head + json.dumps(filler.words(n)) + tail
        except ServerDraining:  # SIGTERM's deadline passed: end the stream with an error event, not a cut
            yield sse(
                {
                    "error": {
                        "message": "The server is shutting down.",
                        "type": "server_error",
                        "param": None,
                        "code": "server_shutdown",
                    }
                }
            )
            yield sse("[DONE]")
            return
        yield sse(chunk(None, "length"))
        if body.include_usage:
            yield sse(
                {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": config.model_id,
                    "choices": [],
                    "usage": usage(stream),
                }
            )
        yield sse("[DONE]")

    async def serve(
        request: Request, body: _Body, chat: bool, prompt_tokens: int, max_tokens: int, prompt_text: str
    ) -> Response:
        limit = engine.max_context_tokens
        if prompt_tokens + max_tokens > limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {'messages' if chat else 'prompt'}, "
                f"{max_tokens} in the completion). Please reduce the length of the messages or completion.",
                param="messages" if chat else "prompt",
                code="context_length_exceeded",
            )
        metrics.prompt_tokens.inc(prompt_tokens)
        stream = engine.submit(prompt_tokens, max_tokens, prompt_text)
        created = int(time.time())
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{stream.rid}"
        if body.stream:
            return StreamingResponse(
                stream_events(request, stream, body, chat, rid, created), media_type="text/event-stream"
            )
        text = await complete(request, stream)
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length",
            }
        else:
            choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": config.model_id,
                "choices": [choice],
                "usage": usage(stream),
            }
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await read(request, ChatBody)
        assert isinstance(body, ChatBody)
        prompt = count_chat_tokens([m.text() for m in body.messages])
        max_tokens = body.max_completion_tokens or body.max_tokens or engine.sim.s.workload.output.typical
        text = chat_text([(m.role, m.text()) for m in body.messages])
        return await serve(request, body, True, prompt, max_tokens, text)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await read(request, CompletionBody)
        assert isinstance(body, CompletionBody)
        prompts = body.prompt if isinstance(body.prompt, list) else [body.prompt]
        if len(prompts) != 1:
            raise ApiError(400, "exactly one prompt per request is supported", param="prompt")
        return await serve(request, body, False, count_tokens(prompts[0]), body.max_tokens or 16, prompts[0])

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {
            "object": "list",
            "data": [{"id": config.model_id, "object": "model", "created": 0, "owned_by": "cloudmatrix"}],
        }

    @app.get("/v1/cloudmatrix/requests/{rid}")
    async def request_timeline(request: Request, rid: int) -> dict[str, Any]:
        """What the simulation predicted for one request (simulated seconds; divide by speed for wall time)."""
        authorize(request)
        t = engine.sim.table
        if not 0 <= rid < len(t):
            raise ApiError(404, f"no request {rid}", param="rid")
        stamps = {
            name: (None if np.isnan(getattr(t, name)[rid]) else float(getattr(t, name)[rid])) for name in t.STAMPS
        }
        first, arrival, finish = stamps["first_token_s"], stamps["arrival_s"], stamps["finish_s"]
        out = int(t.output_len[rid])
        return {
            "id": rid,
            "state": State(int(t.state[rid])).name.lower() if t.state[rid] >= 0 else "new",
            "speed": engine.speed,
            "prompt_tokens": int(t.input_len[rid]),
            "max_tokens": out,
            **stamps,
            "ttft_s": None if first is None or arrival is None else first - arrival,
            "tpot_s": None if finish is None or first is None or out < 2 else (finish - first) / (out - 1),
        }

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "outstanding": engine.outstanding,
            "completed": engine.completed,
            "sim_time_s": engine.sim.env.now,
        }

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry).decode(), media_type=CONTENT_TYPE_LATEST)

    return app
