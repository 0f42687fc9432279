"""The OpenAI-compatible HTTP API: /v1/models, /v1/completions, /v1/chat/completions (streaming over SSE and
not), /health and /metrics, with vLLM's /version, /ping, /tokenize and /detokenize (vllm_api.py). The model
answers to each of its served names (the catalog id and the Hugging Face id unless --served-model-name says
otherwise); completions end at a simulated end-of-sequence drawn from the scenario's output lengths. Errors
use OpenAI's body: {"error": {"message", "type", "param", "code"}}. Access
(Host, origin, key) is checked before any route by guard.py; there are no /docs pages (they load a CDN)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloudmatrix.emulator.bodies import json_body, validated
from cloudmatrix.emulator.config import ServeConfig
from cloudmatrix.emulator.dashboard import add_dashboard
from cloudmatrix.emulator.engine import FAULT, HISTORY, SHUTDOWN, RealtimeEngine, Stream
from cloudmatrix.emulator.guard import AccessPolicy, add_access_control
from cloudmatrix.emulator.http_errors import (
    ApiError,
    InstanceFailed,
    ServerDraining,
    add_error_handlers,
    fault_event,
    rate_limited,
    recovering_error,
)
from cloudmatrix.emulator.metrics import Metrics
from cloudmatrix.emulator.schemas import MAX_TOKENS_LIMIT, ChatBody, CompletionBody, RequestBody
from cloudmatrix.emulator.text import Filler, chat_prompt_tokens, chat_text, openai_usage
from cloudmatrix.emulator.tokenizer_worker import TokenizerFailed
from cloudmatrix.emulator.vllm_api import add_vllm_routes
from cloudmatrix.emulator.vllm_metrics import EngineState, VllmMetrics, finished_sequence


def create_app(engine: RealtimeEngine, config: ServeConfig) -> FastAPI:
    metrics = Metrics(lambda: engine.outstanding, engine.queue_depth, engine.kv_occupancy, engine.cache_hit_rate)
    vllm = VllmMetrics(metrics.registry, config.names[0], engine.max_context_tokens, EngineState.of(engine))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        await engine.stop()

    # no /docs or /redoc: FastAPI's pages load their scripts from a CDN; /openapi.json stays (behind the key)
    app = FastAPI(title="cloudmatrix emulator", lifespan=lifespan, docs_url=None, redoc_url=None)

    policy = AccessPolicy(
        api_key=config.api_key,
        allowed_hosts=config.allowed_hosts,
        allowed_origins=config.allowed_origins,
        public_metrics=config.public_metrics,
    )
    add_access_control(app, policy)
    add_error_handlers(app, metrics)  # after: its request counter wraps the access checks and counts refusals
    add_dashboard(app, engine, metrics, config.model_id)

    def check_model(name: str) -> None:
        if name not in config.names:
            served = ", ".join(f"'{n}'" for n in config.names)
            raise ApiError(
                404,
                f"The model '{name[:200]}' does not exist; this server serves {served}.",
                param="model",
                code="model_not_found",
            )

    async def read_json(request: Request) -> dict[str, Any]:
        return await json_body(request, config.max_body_bytes)

    async def read(request: Request, schema: type[RequestBody]) -> RequestBody:
        if engine.draining:
            raise ApiError(503, "The server is shutting down.", "server_error", code="server_shutdown")
        recovering = engine.recovery_retry_after_s()
        if recovering:
            raise recovering_error(recovering)
        data = await read_json(request)
        body = validated(schema, data)
        check_model(body.model)
        asked = body.logprobs_asked()
        if asked is not None:
            raise ApiError(
                400,
                f"'{asked}' is not supported: the emulator simulates timing, not a model, and has no token "
                "probabilities to return.",
                param=asked,
                code="logprobs_not_supported",
            )
        if engine.outstanding >= engine.max_outstanding:
            raise too_many(1)
        return body

    def too_many(wanted: int) -> ApiError:
        return rate_limited(engine.outstanding, wanted, engine.max_outstanding, engine.retry_after_s())

    def usage(streams: list[Stream]) -> dict[str, Any]:
        generated = sum(s.generated for s in streams)
        return openai_usage(streams[0].prompt_tokens, generated, engine.cached_tokens(streams[0]))

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
                    timeline = engine.timeline(stream.rid) or {}
                    vllm.observe_finished(
                        finished_sequence(stream, timeline, engine.speed, time.perf_counter() - started)
                    )
                    return
                if item == FAULT:  # a simulated fault cut the sequence
                    raise InstanceFailed()
                if isinstance(item, str):  # SHUTDOWN: the drain deadline passed
                    raise ServerDraining()
                n, sim_t = item
                if last is None:
                    metrics.observe_ttft(time.perf_counter() - started)  # wall clock: the HTTP queue is real
                    vllm.observe_ttft(time.perf_counter() - started)
                    metrics.observe_tpot(0.0, n - 1)  # tokens that came with the first: no wait of their own
                else:
                    # the emulated deployment's pace (simulated seconds in wall seconds), not this host's
                    # scheduling jitter; token-weighted: a chunk of k tokens is k observations
                    metrics.observe_tpot((sim_t - last) / engine.speed / n, n)
                    vllm.observe_gap((sim_t - last) / engine.speed)  # vLLM's: one per chunk, the whole gap
                last = sim_t
                metrics.count_tokens(item[0])
                vllm.count_tokens(0, item[0])
                yield item
        finally:
            if not finished:
                engine.cancel(stream)
                vllm.success.labels(*vllm.labels, "abort").inc()

    async def choices(request: Request, streams: list[Stream]) -> AsyncGenerator[tuple[int, int | None], None]:
        """(choice, tokens) as the simulation releases them across the request's choices, then (choice, None)
        when that choice is done. Leaving early cancels every choice's simulated sequence."""
        if len(streams) == 1:
            async for n, _ in tokens(request, streams[0]):
                yield 0, n
            yield 0, None
            return
        merged: asyncio.Queue[tuple[int, int | None | str]] = asyncio.Queue()

        async def pump(i: int, stream: Stream) -> None:
            try:
                async for n, _ in tokens(request, stream):
                    merged.put_nowait((i, n))
                merged.put_nowait((i, None))
            except ServerDraining:
                merged.put_nowait((i, SHUTDOWN))
            except InstanceFailed:
                merged.put_nowait((i, FAULT))

        pumps = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
        try:
            for _ in range(len(streams)):
                while True:
                    i, item = await merged.get()
                    if item == FAULT:
                        raise InstanceFailed()
                    if isinstance(item, str):
                        raise ServerDraining()
                    yield i, item
                    if item is None:
                        break
        finally:
            for task in pumps:
                task.cancel()

    async def complete(request: Request, streams: list[Stream]) -> list[str]:
        """Collect every choice's whole answer, watching for a client that disconnects meanwhile."""
        fillers = [Filler(config.seed, s.seq) for s in streams]
        parts: list[list[str]] = [[] for _ in streams]
        agen = choices(request, streams)
        try:
            while True:
                task = asyncio.ensure_future(agen.__anext__())
                while not task.done():
                    await asyncio.wait({task}, timeout=0.5)
                    if not task.done() and await request.is_disconnected():
                        task.cancel()
                        raise ApiError(499, "client closed the request")
                i, n = task.result()
                if n is not None:
                    parts[i].append(fillers[i].words(n))
        except StopAsyncIteration:
            return ["".join(p) for p in parts]
        except ServerDraining:
            raise ApiError(503, "The server is shutting down.", "server_error", code="server_shutdown") from None
        except InstanceFailed:
            raise recovering_error(max(engine.recovery_retry_after_s(), 1)) from None
        finally:
            await agen.aclose()

    def sse(payload: dict[str, Any] | str) -> str:
        return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"

    async def stream_events(
        request: Request, streams: list[Stream], body: RequestBody, chat: bool, rid: str, created: int
    ) -> AsyncIterator[str]:
        fillers = [Filler(config.seed, s.seq) for s in streams]
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(i: int, text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = (
                    {"role": "assistant", "content": ""} if role else {} if text is None else {"content": text}
                )
                choice: dict[str, Any] = {"index": i, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": i, "text": text or "", "finish_reason": finish, "logprobs": None}
            return {"id": rid, "object": obj, "created": created, "model": body.model, "choices": [choice]}

        def with_usage(payload: dict[str, Any]) -> dict[str, Any]:
            return payload | {"usage": usage(streams)} if body.continuous_usage else payload

        # Token chunks differ only in their text: format the rest once (this is the server's hot path).
        templates = [sse(chunk(i, "\x00", None)).split(json.dumps("\x00")) for i in range(len(streams))]
        if chat:
            for i in range(len(streams)):
                yield sse(with_usage(chunk(i, None, None, role=True)))
        try:
            async for i, n in choices(request, streams):
                if n is None:
                    yield sse(with_usage(chunk(i, None, streams[i].finish_reason)))
                elif body.continuous_usage:
                    yield sse(with_usage(chunk(i, fillers[i].words(n), None)))
                else:
                    head, tail = templates[i]
                    yield head + json.dumps(fillers[i].words(n)) + tail
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
        except InstanceFailed:  # a simulated fault lost the sequence: the client sees an error event
            yield sse(fault_event())
            yield sse("[DONE]")
            return
        if body.include_usage:
            yield sse(
                {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": body.model,
                    "choices": [],
                    "usage": usage(streams),
                }
            )
        yield sse("[DONE]")

    async def measure(texts: list[str], block_text: str, param: str) -> tuple[list[int], list[int] | None]:
        """Each text's tokens and the prompt's chained block hashes (None without an EMS cache). A tokenizer
        that fails on this prompt fails this request (400), never the server."""
        block = engine.block_tokens
        try:
            measured = await engine.tokens.measure(texts, block_text if block else None, block or 1)
        except TokenizerFailed as e:
            message = f"The server's {engine.tokens.name} cannot tokenise this {param}: {e}."
            raise ApiError(400, message, param=param, code="tokenizer_failed") from None
        return measured.counts, measured.prefix_hashes() if block else None

    async def serve(
        request: Request, body: RequestBody, chat: bool, prompt_tokens: int, max_tokens: int, hashes: list[int] | None
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
        if body.min_tokens > max_tokens:
            raise ApiError(
                400,
                f"min_tokens ({body.min_tokens}) must be at most max_tokens ({max_tokens}).",
                param="min_tokens",
            )
        if engine.outstanding + body.n > engine.max_outstanding:
            raise too_many(body.n)
        metrics.prompt_tokens.inc(prompt_tokens * body.n)
        vllm.count_tokens(prompt_tokens * body.n, 0)
        vllm.observe_request(body.n, max_tokens)
        streams = [
            engine.submit(prompt_tokens, max_tokens, hashes, min_tokens=body.min_tokens, ignore_eos=body.ignore_eos)
            for _ in range(body.n)
        ]
        created = int(time.time())
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{streams[0].rid}"
        if body.stream:
            return StreamingResponse(
                stream_events(request, streams, body, chat, rid, created), media_type="text/event-stream"
            )
        texts = await complete(request, streams)
        if chat:
            out: list[dict[str, Any]] = [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": s.finish_reason}
                for i, (t, s) in enumerate(zip(texts, streams, strict=True))
            ]
        else:
            out = [
                {"index": i, "text": t, "finish_reason": s.finish_reason, "logprobs": None}
                for i, (t, s) in enumerate(zip(texts, streams, strict=True))
            ]
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": body.model,
                "choices": out,
                "usage": usage(streams),
            }
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await read(request, ChatBody)
        assert isinstance(body, ChatBody)
        contents = [m.text() for m in body.messages]
        counts, hashes = await measure(contents, chat_text([(m.role, m.text()) for m in body.messages]), "messages")
        prompt = chat_prompt_tokens(counts)
        # no cap given: as vLLM, whatever context is left (the simulated end-of-sequence ends it first)
        default = max(1, min(MAX_TOKENS_LIMIT, engine.max_context_tokens - prompt))
        max_tokens = body.max_completion_tokens or body.max_tokens or default
        return await serve(request, body, True, prompt, max_tokens, hashes)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await read(request, CompletionBody)
        assert isinstance(body, CompletionBody)
        prompts = body.prompt if isinstance(body.prompt, list) else [body.prompt]
        if len(prompts) != 1:
            raise ApiError(400, "exactly one prompt per request is supported", param="prompt")
        (count,), hashes = await measure(prompts, prompts[0], "prompt")
        return await serve(request, body, False, count, body.max_tokens or 16, hashes)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"object": "model", "created": 0, "owned_by": "cloudmatrix", "root": config.model_id, "parent": None}
        return {
            "object": "list",
            "data": [card | {"id": n, "max_model_len": engine.max_context_tokens} for n in config.names],
        }

    add_vllm_routes(app, engine, read_json, check_model)

    @app.get("/v1/cloudmatrix/requests/{rid}")
    async def request_timeline(rid: str) -> dict[str, Any]:
        """What the simulation predicted for one request (simulated seconds; divide by speed for wall time),
        by its response id (``chatcmpl-...``, ``cmpl-...``) or the random part of it."""
        bare = rid.split("-", 1)[1] if rid.startswith(("chatcmpl-", "cmpl-")) else rid
        timeline = engine.timeline(rid) or engine.timeline(bare)
        if timeline is None:
            kept = f"timelines are kept for the live requests and the last {HISTORY:,}"
            raise ApiError(404, f"no request {rid[:64]!r} ({kept})", param="rid")
        return timeline

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
