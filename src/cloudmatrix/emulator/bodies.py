"""A request's body as the API reads it: bytes within the size limit (413 as soon as it passes, whatever its
Content-Length says), then a JSON object within the nesting limit and without lone surrogates (400)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from cloudmatrix.catalog.sourced import describe_validation_error
from cloudmatrix.emulator.http_errors import ApiError, has_lone_surrogate
from cloudmatrix.inputs import MAX_DEPTH, depth, number_problem


async def body_bytes(request: Request, limit: int) -> bytes:
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


async def json_body(request: Request, limit: int) -> dict[str, Any]:
    raw = await body_bytes(request, limit)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"Request body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, f"Request body is nested more than {MAX_DEPTH} levels deep.") from None
    except ValueError as e:  # json's int() refuses an integer of over 4,300 digits
        raise ApiError(400, f"Request body: {number_problem(e)}.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Request body must be a JSON object.")
    if depth(data) > MAX_DEPTH:
        raise ApiError(400, f"Request body is nested more than {MAX_DEPTH} levels deep.")
    if has_lone_surrogate(data):
        raise ApiError(400, "Request body holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text.")
    return data


M = TypeVar("M", bound=BaseModel)


def validated(schema: type[M], data: dict[str, Any]) -> M:
    """A parsed body checked against its schema; the first problem is a 400 naming the field."""
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise ApiError(400, describe_validation_error(e), param=".".join(str(p) for p in first["loc"])) from None
