"""FastAPI policy server: OpenVLA-compatible ``POST /act`` plus ``/health`` and ``/info``.

Client mistakes answer 4xx with ``{"detail": <reason>}`` (OpenVLA answers 200 + "error"; we do not);
a model failure answers 500 with the same JSON shape. The body is read raw and decoded by
:mod:`vla.wire`, so no pickle and no patched ``json``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from fastapi.security import APIKeyHeader
from starlette.requests import ClientDisconnect

from vla.policy import Policy
from vla.serve.batching import MicroBatcher
from vla.wire import API_KEY_HEADER, ActRequest, PayloadError, encode_action, parse_act_payload

log = logging.getLogger(__name__)

_ARRAY_SCHEMA = {
    "type": "object", "description": "json_numpy array",
    "properties": {"__numpy__": {"type": "string", "format": "byte"}, "dtype": {"type": "string"},
                   "shape": {"type": "array", "items": {"type": "integer"}}},
    "required": ["__numpy__", "dtype", "shape"],
}
_ACT_OPENAPI = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
        {"type": "object", "required": ["image", "instruction"], "properties": {
            "image": {**_ARRAY_SCHEMA, "description": "json_numpy uint8 array [H, W, 3] (OpenVLA-OFT's name: full_image)"},
            "instruction": {"type": "string", "minLength": 1},
            "unnorm_key": {"type": "string", "nullable": True},
            "wrist_image": {**_ARRAY_SCHEMA, "description": "json_numpy uint8 array [H, W, 3]; models with a wrist view"},
            "proprio": {**_ARRAY_SCHEMA, "description": "json_numpy float array [P], the raw robot state "
                                                        "(OpenVLA-OFT's name: state); models with proprio"}}},
        {"type": "object", "required": ["encoded"], "description": "OpenVLA double encoding: the payload as a JSON string",
         "properties": {"encoded": {"type": "string"}}},
    ]}}}},
    "responses": {"200": {"description": "json_numpy float array: the unnormalized action [action_dim] (token "
                                         "models), or the chunk [chunk_size, action_dim] (chunk models)",
                          "content": {"application/json": {"schema": _ARRAY_SCHEMA}}}},
}


@dataclass(frozen=True)
class ServeSettings:
    """Request limits, batching knobs and connection timeouts (``conf/serve.yaml``).

    The timeouts bound how long a slow or stalled client holds a socket: ``header_timeout_s`` from the
    moment a connection opens or finishes a response until the next request's headers are in
    (:mod:`vla.serve.server`), ``body_timeout_s`` for reading an ``/act`` body (then 408), and
    ``keep_alive_s`` for an idle keep-alive connection (uvicorn's ``timeout_keep_alive``).
    """

    max_batch_size: int = 8
    max_wait_ms: float = 5.0
    max_image_side: int = 1024
    api_key: str | None = None
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_image_side < 1:
            raise ValueError(f"max_image_side must be >= 1, got {self.max_image_side}")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be null (no key) or a non-empty string")

    @property
    def max_body_bytes(self) -> int:
        """Largest body worth reading for a one-camera model (see :meth:`body_limit`)."""
        return self.body_limit(1)

    def body_limit(self, n_images: int) -> int:
        """Largest body worth reading: ``n_images`` max-size images in base64, possibly double-encoded, plus slack."""
        return 2 * n_images * (4 * self.max_image_side * self.max_image_side * 3 // 3) + 64 * 1024


def create_app(policy: Policy, settings: ServeSettings | None = None) -> FastAPI:
    """An app serving ``policy``; the micro-batcher runs for the app's lifetime."""
    settings = settings or ServeSettings()
    batcher = MicroBatcher(policy.predict_batch, settings.max_batch_size, settings.max_wait_ms)
    unnorm_keys = sorted(policy.norm_stats)
    body_limit = settings.body_limit(len(policy.image_views))

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    public_docs = settings.api_key is None  # browsers cannot send the key, so keyed servers have no docs pages
    app = FastAPI(title="VLA policy server", version="1", lifespan=lifespan, docs_url="/docs" if public_docs else None,
                  redoc_url="/redoc" if public_docs else None, openapi_url="/openapi.json" if public_docs else None)
    app.state.batcher = batcher
    app.state.settings = settings
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def require_key(key: str | None = Depends(header)) -> None:
        if settings.api_key is not None and not hmac.compare_digest((key or "").encode(), settings.api_key.encode()):
            raise HTTPException(401, f"Missing or wrong {API_KEY_HEADER} header")

    if not public_docs:
        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_key)])
        def openapi() -> dict:
            return app.openapi()

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
            "action_head": policy.action_head,
            "chunk_size": policy.chunk_size,
            "image_views": list(policy.image_views),
            "proprio_dim": policy.proprio_dim,
        }

    @app.post("/act", dependencies=[Depends(require_key)], openapi_extra=_ACT_OPENAPI)
    async def act(request: Request) -> Response:
        _require_json(request)
        body = await _read_body(request, body_limit, settings.body_timeout_s)
        try:
            payload = parse_act_payload(body, settings.max_image_side)
            unnorm_key = policy.resolve_unnorm_key(payload.unnorm_key)
            views = request_views(payload)
            policy.check_inputs(views, payload.proprio, unnorm_key)
        except PayloadError as err:
            raise HTTPException(err.status, str(err)) from err
        except ValueError as err:  # unknown / ambiguous unnorm_key, views or proprio this model does not take
            raise HTTPException(422, str(err)) from err
        action = await _predict(batcher, views, payload, unnorm_key)
        return Response(encode_action(action, payload.plain_lists, payload.double_encoded), media_type="application/json")

    return app


def _require_json(request: Request) -> None:
    """415 unless the body is declared JSON: a web page may POST ``text/plain`` or form bodies to any origin
    without a CORS preflight, while ``application/json`` needs one, which this server never grants."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, f"Content-Type must be application/json, got {content_type or 'none'!r}")


def request_views(payload: ActRequest) -> dict[str, np.ndarray]:
    """The request's camera images by model view name (``image`` is the primary camera)."""
    views = {"primary": payload.image}
    if payload.wrist_image is not None:
        views["wrist"] = payload.wrist_image
    return views


async def _predict(batcher: MicroBatcher, views: dict[str, np.ndarray], payload: ActRequest, unnorm_key: str) -> np.ndarray:
    """The action or chunk, or a JSON error: 422 when the model rejects this request's input, else 500."""
    try:
        return await batcher.submit(views, payload.instruction, unnorm_key, payload.proprio)
    except ValueError as err:
        raise HTTPException(422, str(err)) from err
    except Exception as err:
        log.exception("Prediction failed")
        raise HTTPException(500, f"Prediction failed ({type(err).__name__}); see the server log") from err


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body within ``timeout_s`` (408 and close, so a stalled client frees its socket); a client that
    hangs up midway is routine for a robot server, so it is one log line, not an ASGI traceback."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_limited(request, limit)
    except TimeoutError as err:
        raise HTTPException(408, f"Body not received within {timeout_s} s", headers={"Connection": "close"}) from err
    except ClientDisconnect as err:
        log.info("Client %s hung up before sending the whole /act body", _peer(request))
        raise HTTPException(400, "Client disconnected before sending the whole body") from err


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


async def _read_limited(request: Request, limit: int) -> bytes:
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
