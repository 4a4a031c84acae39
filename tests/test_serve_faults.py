"""Faults at the /act server, as real HTTP on loopback: a poisoned request inside a micro-batch, non-JSON
bodies, stalled clients (raw sockets), docs behind the API key, clients that hang up."""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from test_serve import export_tiny_vla, random_images

from vla.client import PolicyClient
from vla.policy import load_policy
from vla.serve.app import API_KEY_HEADER, ServeSettings, create_app
from vla.serve.server import BackgroundServer
from vla.wire import dumps, loads

JSON = {"Content-Type": "application/json"}
MARKER = "make the model fail"  # an instruction the patched predict path raises on
DEADLINE_S = 1.0  # header and body time limits of the `server` fixture
SLACK_S = 1.5  # scheduling slack on 2 shared cores


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_export_faults")
    export_tiny_vla(out)
    return load_policy(out)


@pytest.fixture(scope="module")
def server(policy):
    """Short header/body limits; a long keep-alive, so only the header deadline can close idle connections."""
    settings = ServeSettings(header_timeout_s=DEADLINE_S, body_timeout_s=DEADLINE_S, keep_alive_s=30)
    with BackgroundServer(create_app(policy, settings)) as running:
        yield running


def act_body(image: np.ndarray, instruction: str) -> str:
    """An /act body as OpenVLA's clients send it (``json.dumps`` escapes a lone surrogate as ``\\ud800``)."""
    return dumps({"image": image, "instruction": instruction})


def post_together(url: str, bodies: list[str]) -> list[requests.Response]:
    """POST all bodies at once (a barrier lines the threads up), so they land in one micro-batch."""
    barrier = threading.Barrier(len(bodies))

    def post(body: str) -> requests.Response:
        barrier.wait(timeout=30)
        return requests.post(f"{url}/act", data=body, headers=JSON, timeout=60)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


POISONS = {
    "lone surrogate": ("\ud800", None, 422),
    "model raises ValueError": (MARKER, ValueError, 422),
    "model raises RuntimeError": (MARKER, RuntimeError, 500),
}


@pytest.fixture(scope="module")
def eight_requests(policy) -> tuple[list[np.ndarray], list[str], list[np.ndarray]]:
    """Images, instructions and their unbatched actions (computed once: the model is slow on shared cores)."""
    images = random_images(8, seed=4)
    instructions = [f"pick up the block number {i}" for i in range(8)]
    return images, instructions, [policy.act(image, text) for image, text in zip(images, instructions)]


@pytest.mark.parametrize("poison,error,status", POISONS.values(), ids=POISONS.keys())
def test_a_poisoned_request_fails_alone_in_its_batch(policy, eight_requests, monkeypatch, poison, error, status):
    images, instructions, expected = eight_requests
    instructions = instructions[:3] + [poison] + instructions[4:]
    marker_batches: list[int] = []  # size of every model call that held the poisoned request
    predict = policy.predict_batch

    def faulty_predict(images, texts, unnorm_key=None):
        if MARKER in texts:
            marker_batches.append(len(texts))
            raise error("the model refuses this input")
        return predict(images, texts, unnorm_key)

    monkeypatch.setattr(policy, "predict_batch", faulty_predict)  # before create_app: the batcher binds it
    with BackgroundServer(create_app(policy, ServeSettings(max_batch_size=8, max_wait_ms=500))) as running:
        responses = post_together(running.url, [act_body(i, t) for i, t in zip(images, instructions)])

    bad = responses.pop(3)
    assert bad.status_code == status and bad.headers["content-type"] == "application/json", bad.text
    assert isinstance(bad.json()["detail"], str) and bad.json()["detail"]
    for response, action in zip(responses, expected[:3] + expected[4:]):
        assert response.status_code == 200, response.text
        np.testing.assert_array_equal(loads(response.content, 1 << 20), action)
    if error is None:
        assert marker_batches == []  # refused by validation, never reached the model
    else:  # batched with others first, then alone once the batch was split
        assert max(marker_batches) > 1 and marker_batches[-1] == 1


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonp"])
def test_act_refuses_bodies_not_declared_json(server, content_type):
    """text/plain and form bodies are what a web page can POST cross-origin without a CORS preflight."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = requests.post(f"{server.url}/act", data=act_body(random_images(1)[0], "go"), headers=headers, timeout=30)
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_act_accepts_json_with_parameters_and_any_case(server, policy, content_type):
    image = random_images(1, seed=9)[0]
    response = requests.post(f"{server.url}/act", data=act_body(image, "go"), headers={"Content-Type": content_type},
                             timeout=30)
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(loads(response.content, 1 << 20), policy.act(image, "go"))


def request_head(body_length: int) -> bytes:
    return (b"POST /act HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % body_length)


def read_until_closed(sock: socket.socket, limit_s: float, trickle: bytes = b"") -> tuple[bytes, float]:
    """What the server sends until it closes ``sock`` and how long that took, sending one byte of
    ``trickle`` every 0.2 s meanwhile; fails if the connection is still open after ``limit_s``."""
    start, received = time.monotonic(), b""
    while time.monotonic() - start < limit_s:
        try:
            if trickle:
                sock.sendall(trickle[:1])
                trickle = trickle[1:]
            if select.select([sock], [], [], 0.2)[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    return received, time.monotonic() - start
                received += chunk
        except (BrokenPipeError, ConnectionResetError):
            return received, time.monotonic() - start
    pytest.fail(f"connection still open after {limit_s} s; received {received[:80]!r}")


def test_stalled_body_gets_408_and_its_connection_closed(server):
    body = act_body(random_images(1)[0], "go").encode()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(request_head(len(body)) + body[:100])
        received, elapsed = read_until_closed(sock, DEADLINE_S + SLACK_S)
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert DEADLINE_S * 0.8 < elapsed < DEADLINE_S + SLACK_S


@pytest.mark.parametrize("stall", ["silent", "partial headers", "trickled headers", "partial headers after a response"])
def test_stalled_headers_get_their_connection_closed(server, stall):
    """uvicorn itself would hold all of these forever; the header deadline is not reset by trickled bytes."""
    partial = request_head(1000)[:30]
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        if stall == "partial headers after a response":  # keep-alive connection, then a stalled next request
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            response = b""
            while not response.endswith(b'{"status":"ok"}'):
                chunk = sock.recv(65536)  # the socket's 10 s timeout bounds this
                assert chunk, f"closed after {response!r}"
                response += chunk
        if stall in ("partial headers", "partial headers after a response"):
            sock.sendall(partial)
        trickle = request_head(1000) if stall == "trickled headers" else b""
        received, elapsed = read_until_closed(sock, DEADLINE_S + SLACK_S, trickle)
    assert received == b"" and elapsed > DEADLINE_S * 0.5


def test_keyed_server_hides_docs_and_keys_the_schema(policy):
    """Browsers cannot send X-API-Key, so the docs pages are off; /openapi.json needs the key like /act."""
    with BackgroundServer(create_app(policy, ServeSettings(api_key="s3cret"))) as running:
        for route in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert requests.get(f"{running.url}{route}", timeout=10).status_code == 404, route
        assert requests.get(f"{running.url}/openapi.json", timeout=10).status_code == 401
        schema = requests.get(f"{running.url}/openapi.json", headers={API_KEY_HEADER: "s3cret"}, timeout=10).json()
    assert {"/act", "/health", "/info"} <= set(schema["paths"])


def test_client_hanging_up_is_one_log_line_and_the_server_keeps_serving(server, policy, caplog):
    caplog.set_level(logging.INFO, logger="vla.serve")
    uvicorn_log = logging.getLogger("uvicorn.error")  # does not propagate to the root logger caplog watches
    uvicorn_log.addHandler(caplog.handler)
    try:
        body = act_body(random_images(1)[0], "go").encode()
        for sent in (request_head(len(body)) + body[:100], request_head(len(body)) + body):  # mid-body, before the answer
            with socket.create_connection((server.host, server.port), timeout=10) as sock:
                sock.sendall(sent)
        deadline = time.monotonic() + 10
        while "hung up" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        image = random_images(1, seed=7)[0]
        np.testing.assert_array_equal(PolicyClient(server.url).act(image, "go"), policy.act(image, "go"))
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    hang_ups = [r for r in caplog.records if "hung up" in r.getMessage()]  # the 2nd may or may not count as one
    assert hang_ups and all(r.levelno == logging.INFO and "\n" not in r.getMessage() for r in hang_ups)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
