"""vLLM's own routes besides the OpenAI ones, in vLLM's shapes: ``/version``, ``/ping``, ``/tokenize`` and
``/detokenize``. Token ids come from ``serve --tokenizer``'s file; without one the server counts 4 characters
per token and has no vocabulary, so ``/tokenize`` gives simulated ids (each 4-character piece's code points
mixed into the model's vocabulary size: stable, but no real tokenizer's) and ``/detokenize`` answers 400 saying why."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

import cloudmatrix
from cloudmatrix.emulator.bodies import validated
from cloudmatrix.emulator.engine import RealtimeEngine
from cloudmatrix.emulator.http_errors import ApiError
from cloudmatrix.emulator.schemas import DetokenizeBody, TokenizeBody
from cloudmatrix.emulator.text import CHARS_PER_TOKEN, CharTokens, chat_prompt_tokens, chat_text
from cloudmatrix.emulator.tokenizer_worker import TokenizerFailed, TokenizerPool

ReadJson = Callable[[Request], Awaitable[dict[str, Any]]]
CheckModel = Callable[[str], None]


HASH_MULTIPLIERS = np.array([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F], dtype=np.uint64)


def simulated_ids(text: str, vocab: int) -> list[int]:
    """Stable stand-in ids for the 4-character pieces the server counts without a tokenizer: each piece's
    code points mixed into one number, modulo the vocabulary size. Vectorised: a prompt of megabytes takes
    milliseconds on the event loop."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    pad = (-len(points)) % CHARS_PER_TOKEN
    pieces = np.concatenate([points, np.zeros(pad, dtype=np.uint64)]).reshape(-1, CHARS_PER_TOKEN)
    if len(pieces) == 0:
        pieces = np.zeros((1, CHARS_PER_TOKEN), dtype=np.uint64)
    mixed = (pieces * HASH_MULTIPLIERS).sum(axis=1) % np.uint64(vocab)
    return list(mixed.tolist())


def add_vllm_routes(app: FastAPI, engine: RealtimeEngine, read_json: ReadJson, check_model: CheckModel) -> None:
    vocab = engine.sim.costs.model.vocab

    async def body_of(request: Request, schema: type[BaseModel]) -> Any:
        data = await read_json(request)
        body = validated(schema, data)
        model = getattr(body, "model", None)
        if model is not None:
            check_model(model)
        return body

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": cloudmatrix.__version__}

    async def ping() -> Response:
        return Response(status_code=200)

    for method in ("GET", "POST"):  # vLLM answers both (SageMaker's liveness probe)
        app.add_api_route("/ping", ping, methods=[method], operation_id=f"ping_{method.lower()}")

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        body: TokenizeBody = await body_of(request, TokenizeBody)
        if (body.prompt is None) == (body.messages is None):
            raise ApiError(400, "Give exactly one of 'prompt' and 'messages'.", param="prompt")
        chat = body.messages is not None
        text = chat_text([(m.role, m.text()) for m in body.messages or []]) if chat else body.prompt or ""
        texts = [m.text() for m in body.messages or []] if chat else [text]
        try:
            measured = await engine.tokens.measure([text, *texts] if chat else texts, None, 1, with_ids=True)
        except TokenizerFailed as e:
            raise ApiError(400, f"The server's {engine.tokens.name} cannot tokenise this: {e}.") from None
        if measured.ids is not None:
            ids, strs = measured.ids, None
        else:
            assert isinstance(engine.tokens, CharTokens)
            strs = engine.tokens.pieces(text) if body.return_token_strs else None
            ids = simulated_ids(text, vocab)
        # count: the prompt tokens a completion of this prompt (or chat) is charged
        count = chat_prompt_tokens(measured.counts[1:]) if chat else measured.counts[0]
        out: dict[str, Any] = {"count": count, "max_model_len": engine.max_context_tokens, "tokens": ids}
        if body.return_token_strs:
            out["token_strs"] = strs
        return out

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, str]:
        body: DetokenizeBody = await body_of(request, DetokenizeBody)
        if not isinstance(engine.tokens, TokenizerPool):
            raise ApiError(
                400,
                "This server has no tokenizer (prompts are counted at 4 characters per token and /tokenize gives "
                "simulated ids, which are hashes): start serve with --tokenizer tokenizer.json to detokenize.",
                param="tokens",
                code="no_tokenizer",
            )
        try:
            return {"prompt": await engine.tokens.decode(body.tokens)}
        except TokenizerFailed as e:
            raise ApiError(400, f"The server's {engine.tokens.name} cannot decode these ids: {e}.") from None
