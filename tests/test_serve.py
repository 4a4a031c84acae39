"""The /act server on loopback with a tiny exported model: OpenVLA clients, every error class, load."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import json_numpy
import numpy as np
import pytest
import requests
import torch

from vla.models import build_vla, save_vla
from vla.serve.app import API_KEY_HEADER, ServeSettings, create_app
from vla.serve.batching import MicroBatcher
from vla.client import PolicyClient, ServerError
from vla.policy import load_policy
from vla.serve.server import BackgroundServer

STATS = {
    "sim": {
        "action": {
            "q01": [-0.05] * 6 + [0.0], "q99": [0.05] * 6 + [1.0], "min": [-0.1] * 6 + [0.0],
            "max": [0.1] * 6 + [1.0], "mean": [0.0] * 7, "std": [0.02] * 6 + [0.5], "mask": [True] * 6 + [False],
        }
    }
}
MAX_SIDE = 512
REPO_ROOT_CONF = Path(__file__).resolve().parents[1] / "conf"


def export_tiny_vla(out_dir) -> None:
    """A tiny random VLA whose head only scores action tokens, so actions vary with the input."""
    torch.manual_seed(0)
    vla = build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=STATS).eval()
    head = vla.llm_backbone.llm.get_output_embeddings().weight
    first_action_id = vla.action_tokenizer.vocab_size - 256
    with torch.no_grad():
        head[:first_action_id] = 0
        head[vla.action_tokenizer.vocab_size:] = 0
        head[first_action_id:vla.action_tokenizer.vocab_size] *= 50
    save_vla(vla, out_dir)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_export")
    export_tiny_vla(out)
    return out


@pytest.fixture(scope="module")
def policy(checkpoint):
    return load_policy(checkpoint)


@pytest.fixture(scope="module")
def server(policy):
    app = create_app(policy, ServeSettings(max_batch_size=8, max_wait_ms=20, max_image_side=MAX_SIDE))
    with BackgroundServer(app) as running:
        running.app = app
        yield running


def random_images(n: int, seed: int = 0, side: int = 64) -> list[np.ndarray]:
    """Noisy images of distinct flat colours (pure noise images all look alike to a random model)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (n, 1, 1, 3))
    noise = rng.integers(-8, 9, (n, side, side + 8, 3))
    return list(np.clip(colours + noise, 0, 255).astype(np.uint8))


def test_openvla_style_client_works_unchanged(server, policy):
    """A client exactly as OpenVLA documents it (json_numpy.patch + requests), plain and double-encoded."""
    image = random_images(1, seed=3)[0]
    script = textwrap.dedent(f"""
        import json, sys
        import json_numpy, numpy as np, requests
        json_numpy.patch()
        image = np.frombuffer(bytes.fromhex(sys.stdin.read()), dtype=np.uint8).reshape({list(image.shape)})
        plain = requests.post("{server.url}/act", json={{"image": image, "instruction": "pick up the screw"}}).json()
        encoded = requests.post("{server.url}/act", json={{"encoded": json.dumps(
            {{"image": image, "instruction": "pick up the screw", "unnorm_key": "sim"}})}}).json()
        # As OpenVLA's deploy.py: a double-encoded request gets JSONResponse(json_numpy.dumps(action)).
        assert isinstance(plain, np.ndarray) and isinstance(encoded, str)
        encoded = json_numpy.loads(encoded)
        print(json.dumps({{"plain": plain.tolist(), "encoded": encoded.tolist(), "dtype": str(plain.dtype)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], input=image.tobytes().hex(), capture_output=True,
                          text=True, timeout=120, check=True)
    answer = json.loads(done.stdout)
    expected = policy.act(image, "pick up the screw")
    assert answer["dtype"] == str(expected.dtype)
    np.testing.assert_array_equal(answer["plain"], expected)
    np.testing.assert_array_equal(answer["encoded"], expected)
    assert len(answer["plain"]) == 7


def test_first_request_with_a_plain_list_image_just_works(server, policy):
    """What a first-time user sends with plain requests (img.tolist()) is answered like json_numpy."""
    image = random_images(1, seed=3)[0]
    answer = requests.post(server.url + "/act", json={"image": image.tolist(), "instruction": "pick up the screw"},
                           timeout=60)
    assert answer.status_code == 200, answer.text
    action = answer.json()  # a plain list back: nothing to decode on a client without json_numpy
    assert isinstance(action, list) and len(action) == 7
    np.testing.assert_array_equal(action, policy.act(image, "pick up the screw"))


@pytest.mark.parametrize("image,reason", [
    ([[[0.5, 0.5, 0.5]]], "integers 0-255"),
    ([[[0, 0, 300]]], "0..255"),
    ([[[0, 0, 0]], [[0, 0]]], "rectangular"),
    ([[[True, False, True]]], "integers 0-255"),
    ("a picture", "nested list"),
])
def test_bad_plain_images_get_422_with_a_working_example(server, image, reason):
    answer = requests.post(server.url + "/act", json={"image": image, "instruction": "go"}, timeout=60)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert reason in detail
    if reason != "0..255":
        assert "img.tolist()" in detail and "json_numpy.patch()" in detail


def _array(shape, dtype="|u1", data: bytes | None = None) -> dict:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return {"__numpy__": base64.b64encode(data if data is not None else bytes(nbytes)).decode(),
            "dtype": dtype, "shape": list(shape)}


def _body(**fields) -> str:
    payload = {"image": _array((32, 32, 3)), "instruction": "pick up the screw"} | fields
    return json.dumps({k: v for k, v in payload.items() if v is not None})


BAD_REQUESTS = {
    "malformed json": ("{'image': ", 400),
    "not an object": ("[1, 2, 3]", 422),
    "missing image": (json.dumps({"instruction": "go"}), 422),
    "missing instruction": (json.dumps({"image": _array((32, 32, 3))}), 422),
    "2-D list image": (_body(image=[[1, 2, 3]]), 422),
    "float image": (_body(image=_array((32, 32, 3), "<f4")), 422),
    "object dtype (pickle)": (_body(image=_array((1,), "|O", b"\x80\x04N.\x00\x00\x00\x00")), 422),
    "unknown dtype": (_body(image=_array((32, 32, 3)) | {"dtype": "not-a-dtype"}), 422),
    "grayscale 2-D": (_body(image=_array((32, 32))), 422),
    "four channels": (_body(image=_array((32, 32, 4))), 422),
    "empty image": (_body(image=_array((0, 32, 3))), 422),
    "bytes do not match shape": (_body(image=_array((32, 32, 3), data=bytes(10))), 422),
    "bad base64": (_body(image=_array((32, 32, 3)) | {"__numpy__": "%%%not base64%%%"}), 422),
    "oversized image": (_body(image=_array((MAX_SIDE + 1, 8, 3))), 413),
    "huge declared shape": (_body(image=_array((1, 1, 3)) | {"shape": [10**6, 10**6, 3]}), 413),
    "shape that wraps int64": (_body(image=_array((1, 1, 3)) | {"shape": [2**62, 4, 3]}), 413),
    "deeply nested json": ("[" * 100_000 + "]" * 100_000, 400),
    "empty instruction": (_body(instruction="   "), 422),
    "instruction not a string": (_body(instruction=42), 422),
    "unknown unnorm_key": (_body(unnorm_key="bridge_orig"), 422),
    "encoded plus extra fields": (json.dumps({"encoded": _body(), "instruction": "x"}), 422),
    "encoded not valid json": (json.dumps({"encoded": "{nope"}), 400),
}


@pytest.mark.parametrize("body,status", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_requests_get_4xx_with_reason(server, body, status):
    response = requests.post(f"{server.url}/act", data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]


def test_body_over_limit_is_refused_before_reading(server):
    limit = ServeSettings(max_image_side=MAX_SIDE).max_body_bytes
    response = requests.post(f"{server.url}/act", data=b"x" * (limit + 1), headers={"Content-Type": "application/json"},
                             timeout=30)
    assert response.status_code == 413


def test_health_info_and_openapi(server):
    assert requests.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
    info = PolicyClient(server.url).info()
    assert info["unnorm_keys"] == ["sim"] and info["action_dims"] == {"sim": 7}
    assert info["model"] == "tiny-dinosiglip-224px+tiny-llama" and info["max_image_side"] == MAX_SIDE
    schema = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    assert {"/act", "/health", "/info"} <= set(schema["paths"])
    assert "requestBody" in schema["paths"]["/act"]["post"]


def test_concurrent_clients_are_batched_and_match_unbatched(server, policy):
    clients, per_client = 8, 4
    images = random_images(clients, seed=1)
    instructions = [f"pick up the {color} block" for color in ("red", "green", "blue", "big yellow")] * 2
    expected = [policy.act(img, text) for img, text in zip(images, instructions)]
    before = server.app.state.batcher.stats()

    def run_client(i: int) -> list[np.ndarray]:
        client = PolicyClient(server.url)
        try:
            return [client.act(images[i], instructions[i]) for _ in range(per_client)]
        finally:
            client.close()

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(run_client, range(clients)))
    for i, actions in enumerate(results):
        for action in actions:
            np.testing.assert_array_equal(action, expected[i])
    assert len({tuple(a) for a in expected}) > 1, "the tiny model should answer different inputs differently"
    after = server.app.state.batcher.stats()
    assert after["requests_served"] - before["requests_served"] == clients * per_client
    assert after["largest_batch"] > 1
    assert after["batches_run"] - before["batches_run"] < clients * per_client


@pytest.mark.slow
def test_bounded_load_8_clients_x_50_requests_has_no_errors(server):
    images = random_images(8, seed=2)

    def run_client(i: int) -> int:
        client = PolicyClient(server.url)
        try:
            return sum(np.isfinite(client.act(images[i], "open the drawer")).all() for _ in range(50))
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(run_client, range(8))) == 400


def test_api_key_is_required_when_configured(policy):
    app = create_app(policy, ServeSettings(max_batch_size=1, api_key="s3cret"))
    image = random_images(1)[0]
    with BackgroundServer(app) as running:
        assert requests.get(f"{running.url}/health", timeout=10).status_code == 200
        for headers in ({}, {API_KEY_HEADER: "wrong"}):
            response = requests.post(f"{running.url}/act", data=json_numpy.dumps({"image": image, "instruction": "go"}),
                                     headers=headers, timeout=30)
            assert response.status_code == 401
        with pytest.raises(ServerError) as err:
            PolicyClient(running.url).info()
        assert err.value.status == 401
        assert PolicyClient(running.url, api_key="s3cret").act(image, "go").shape == (7,)


def test_microbatcher_groups_by_unnorm_key_and_respects_max_batch():
    calls: list[tuple[int, str | None]] = []

    def fake_predict(images, instructions, unnorm_key):
        calls.append((len(images), unnorm_key))
        scale = 1.0 if unnorm_key == "a" else -1.0
        return np.array([[scale * float(img[0])] for img in images])

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(fake_predict, max_batch_size=3, max_wait_ms=50)
        await batcher.start()
        try:
            jobs = [batcher.submit(np.array([i]), "go", "a" if i % 2 else "b") for i in range(7)]
            return await asyncio.gather(*jobs)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert [float(r[0]) for r in results] == [(1.0 if i % 2 else -1.0) * i for i in range(7)]
    assert all(size <= 3 for size, _ in calls) and sum(size for size, _ in calls) == 7
    assert {key for _, key in calls} == {"a", "b"}


def test_microbatcher_passes_model_errors_to_each_request_and_keeps_serving():
    def flaky_predict(images, instructions, unnorm_key):
        if instructions[0] == "boom":
            raise RuntimeError("model failed")
        return np.zeros((len(images), 7))

    async def scenario():
        batcher = MicroBatcher(flaky_predict, max_batch_size=1, max_wait_ms=0)
        await batcher.start()
        try:
            with pytest.raises(RuntimeError, match="model failed"):
                await batcher.submit(np.zeros(1), "boom", None)
            return await batcher.submit(np.zeros(1), "fine", None)
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()).shape == (7,)


def test_microbatcher_reruns_a_failed_batch_one_by_one_so_only_the_culprit_fails():
    calls: list[list[str]] = []

    def picky_predict(images, instructions, unnorm_key):
        calls.append(list(instructions))
        if "boom" in instructions:
            raise RuntimeError("model failed")
        return np.array([[float(img[0])] for img in images])

    async def scenario() -> list:
        batcher = MicroBatcher(picky_predict, max_batch_size=4, max_wait_ms=200)
        await batcher.start()
        try:
            jobs = [batcher.submit(np.array([i]), "boom" if i == 2 else "go", None) for i in range(4)]
            return await asyncio.gather(*jobs, return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert isinstance(results[2], RuntimeError)
    assert [float(results[i][0]) for i in (0, 1, 3)] == [0.0, 1.0, 3.0]
    assert calls == [["go", "go", "boom", "go"], ["go"], ["go"], ["boom"], ["go"]]


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="max_image_side"):
        ServeSettings(max_image_side=0)
    with pytest.raises(ValueError, match="body_timeout_s"):
        ServeSettings(body_timeout_s=0)
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(lambda *a: None, max_batch_size=0)
