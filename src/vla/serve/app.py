"""FastAPI policy server: OpenVLA-compatible ``POST /act`` plus ``/health`` and ``/info``.

Client mistakes answer 4xx with ``{"detail": <reason>}`` (OpenVLA answers 200 + "error"; we do not).
The body is read raw and decoded by :mod:`vla.wire`, so no pickle and no patched ``json``.
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from fastapi.security import APIKeyHeader

from vla.policy import Policy
from vla.serve.batching import MicroBatcher
from vla.wire import API_KEY_HEADER, PayloadError, dumps, parse_act_payload

_ARRAY_SCHEMA = {
    "type": "object", "description": "json_numpy array",
    "properties": {"__numpy__": {"type": "string", "format": "byte"}, "dtype": {"type": "string"},
                   "shape": {"type": "array", "items": {"type": "integer"}}},
    "required": ["__numpy__", "dtype", "shape"],
}
_ACT_OPENAPI = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
        {"type": "object", "required": ["image", "instruction"], "properties": {
            "image": {**_ARRAY_SCHEMA, "description": "json_numpy uint8 array [H, W, 3]"},
            "instruction": {"type": "string", "minLength": 1},
            "unnorm_key": {"type": "string", "nullable": True}}},
        {"type": "object", "required": ["encoded"], "description": "OpenVLA double encoding: the payload as a JSON string",
         "properties": {"encoded": {"type": "string"}}},
    ]}}}},
    "responses": {"200": {"description": "json_numpy float array [action_dim]: the unnormalized action",
                          "content": {"application/json": {"schema": _ARRAY_SCHEMA}}}},
}


@dataclass(frozen=True)
class ServeSettings:
    """Request limits and batching knobs (``conf/serve.yaml``)."""

    max_batch_size: int = 8
    max_wait_ms: float = 5.0
    max_image_side: int = 1024
    api_key: str | None = None

    def __post_init__(self) -> None:
        if self.max_image_side < 1:
            raise ValueError(f"max_image_side must be >= 1, got {self.max_image_side}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be null (no key) or a non-empty string")

    @property
    def max_body_bytes(self) -> int:
        """Largest body worth reading: a max-size image in base64, possibly double-encoded, plus slack."""
        return 2 * (4 * self.max_image_side * self.max_image_side * 3 // 3) + 64 * 1024


def create_app(policy: Policy, settings: ServeSettings | None = None) -> FastAPI:
    """An app serving ``policy``; the micro-batcher runs for the app's lifetime."""
    settings = settings or ServeSettings()
    batcher = MicroBatcher(policy.predict_batch, settings.max_batch_size, settings.max_wait_ms)
    unnorm_keys = sorted(policy.norm_stats)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="VLA policy server", version="1", lifespan=lifespan)
    app.state.batcher = batcher
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def require_key(key: str | None = Depends(header)) -> None:
        if settings.api_key is not None and not hmac.compare_digest((key or "").encode(), settings.api_key.encode()):
            raise HTTPException(401, f"Missing or wrong {API_KEY_HEADER} header")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/info", dependencies=[Depends(require_key)])
    def info() -> dict:
        return {
            "model": policy.model_id,
            "unnorm_keys": unnorm_keys,
            "action_dims": {key: policy.action_dim(key) for key in unnorm_keys},
            "max_image_side": settings.max_image_side,
            "batching": batcher.stats() | {"max_wait_ms": settings.max_wait_ms},
        }

    @app.post("/act", dependencies=[Depends(require_key)], openapi_extra=_ACT_OPENAPI)
    async def act(request: Request) -> Response:
        body = await _read_body(request, settings.max_body_bytes)
        try:
            payload = parse_act_payload(body, settings.max_image_side)
            unnorm_key = policy.resolve_unnorm_key(payload.unnorm_key)
        except PayloadError as err:
            raise HTTPException(err.status, str(err)) from err
        except ValueError as err:  # unknown / ambiguous unnorm_key
            raise HTTPException(422, str(err)) from err
        action = await batcher.submit(payload.image, payload.instruction, unnorm_key)
        return Response(dumps(action), media_type="application/json")

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing anything over ``limit`` bytes before it is all in memory."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(413, f"Body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"Body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
