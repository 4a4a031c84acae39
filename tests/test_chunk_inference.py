"""Action-chunk inference (docs/action-chunks.md): the policy, open-loop rollouts, /act, batching, client, robot, study.

A tiny random ``l1`` model (2 views, 8-D proprio, K = 4) stands in for OpenVLA-OFT; scripted policies
check the loops' bookkeeping without a model.
"""

from __future__ import annotations

import asyncio
import json
import math
from concurrent.futures import ThreadPoolExecutor

import json_numpy
import numpy as np
import pytest
import requests
import torch

from tests.test_eval_rollout import LineEnv, LineSuite
from vla.client import PolicyClient
from vla.contract.normalization import normalize, unnormalize
from vla.eval.envs.base import TaskSpec
from vla.eval.rollout import open_loop_actions, run_episode
from vla.eval.runner import evaluate
from vla.eval.study import load_suite, run_study, write_report
from vla.models import build_vla
from vla.policy import Policy
from vla.robot import ControlLoop
from vla.serve.app import ServeSettings, create_app
from vla.serve.batching import MicroBatcher
from vla.serve.server import BackgroundServer
from vla.wire import PayloadError, dumps, encode_action, loads, parse_act_payload

K, D, P = 4, 7, 8
MODEL_INPUTS = ("action_head", "chunk_size", "image_views", "proprio_dim")
ACTION_STATS = {"q01": [-0.05] * 6 + [0.0], "q99": [0.05] * 6 + [1.0], "min": [-0.1] * 6 + [0.0],
                "max": [0.1] * 6 + [1.0], "mean": [0.0] * 7, "std": [0.02] * 6 + [0.5], "mask": [True] * 6 + [False]}
PROPRIO_STATS = {"q01": [-1.0] * P, "q99": [1.0] * P, "min": [-2.0] * P, "max": [2.0] * P, "mean": [0.1] * P,
                 "std": [0.5] * P, "mask": [True] * P, "normalization": "normal"}


@pytest.fixture(scope="module")
def chunk_model():
    torch.manual_seed(0)
    stats = {"sim": {"action": ACTION_STATS, "proprio": PROPRIO_STATS}}
    return build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=stats, action_head="l1", chunk_size=K,
                     image_views=("primary", "wrist"), use_proprio=True).eval()


@pytest.fixture(scope="module")
def chunk_policy(chunk_model):
    return Policy(chunk_model)


def images(n: int, seed: int = 0, side: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (n, 1, 1, 3))
    return list(np.clip(colours + rng.integers(-8, 9, (n, side, side, 3)), 0, 255).astype(np.uint8))


def observation(seed: int = 0) -> dict[str, np.ndarray]:
    primary, wrist = images(2, seed)
    state = np.random.default_rng(seed).uniform(-1, 1, P).astype(np.float32)
    return {"image": primary, "wrist_image": wrist, "state": state}


# ---------------------------------------------------------------- policy


def test_chunk_policy_answers_unnormalized_chunks_with_normalized_proprio(chunk_policy, chunk_model):
    obs = observation(1)
    chunk = chunk_policy.act(obs, "pick up the red block")
    assert chunk.shape == (K, D) and chunk.dtype == np.float64 and np.all(np.isfinite(chunk))
    # The same thing by hand: views in image_views order, proprio normalized with its own ("normal") kind.
    inputs = chunk_model.processor.inference_batch([[obs["image"], obs["wrist_image"]]], ["pick up the red block"],
                                                   proprio=normalize(obs["state"][None], PROPRIO_STATS))
    expected = unnormalize(chunk_model.predict_action_chunk(**inputs).numpy(), ACTION_STATS)[0]
    np.testing.assert_array_equal(chunk, expected)
    # predict_batch with view mappings (any key order) and a batch of two gives the same rows.
    other = observation(2)
    batch = chunk_policy.predict_batch([{"wrist": obs["wrist_image"], "primary": obs["image"]},
                                        {"primary": other["image"], "wrist": other["wrist_image"]}],
                                       ["pick up the red block", "pick up the red block"],
                                       proprio=[obs["state"], other["state"]])
    assert batch.shape == (2, K, D)
    np.testing.assert_allclose(batch[0], chunk, atol=1e-6)
    assert not np.allclose(batch[0], batch[1])
    info = chunk_policy.info()
    assert {k: info[k] for k in MODEL_INPUTS} == {"action_head": "l1", "chunk_size": K, "image_views": ["primary", "wrist"],
                                                  "proprio_dim": P}


def test_chunk_policy_input_errors_name_what_is_wrong(chunk_policy):
    obs = observation(3)
    cases = [
        (lambda: chunk_policy.act({"image": obs["image"], "state": obs["state"]}, "go"), r"wrist.*'wrist_image'"),
        (lambda: chunk_policy.act({"image": obs["image"], "wrist_image": obs["wrist_image"]}, "go"), "'state'"),
        (lambda: chunk_policy.act(obs["image"], "go"), r"views \['primary', 'wrist'\].*mapping"),
        (lambda: chunk_policy.predict_batch([{"primary": obs["image"]}], ["go"], proprio=[obs["state"]]),
         r"No image for view\(s\) \['wrist'\]"),
        (lambda: chunk_policy.predict_batch([{"primary": obs["image"], "wrist": obs["image"], "secondary": obs["image"]}],
                                            ["go"], proprio=[obs["state"]]), "secondary"),
        (lambda: chunk_policy.predict_batch([{"primary": obs["image"], "wrist": obs["image"]}], ["go"]), "proprio"),
        (lambda: chunk_policy.act({**obs, "state": np.zeros(7)}, "go"), r"shape \[8\]"),
        (lambda: chunk_policy.act({**obs, "state": np.full(P, np.nan)}, "go"), "NaN"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_proprio_from_state_rearranges_an_env_state_into_the_data_layout(chunk_model, chunk_policy):
    """The sim's 7-D state -> the 8-D vla_sim proprio (EEF 6 + zero pad + gripper)."""
    obs = observation(7)
    sim_state = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9], dtype=np.float32)
    padded = Policy(chunk_model, proprio_from_state=[0, 1, 2, 3, 4, 5, None, 6])
    np.testing.assert_array_equal(padded.act({**obs, "state": sim_state}, "go"),
                                  chunk_policy.act({**obs, "state": np.insert(sim_state, 6, 0.0)}, "go"))
    with pytest.raises(ValueError, match="does not fit"):
        padded.act({**obs, "state": sim_state[:5]}, "go")


def test_open_loop_steps_default_to_the_chunk_and_token_models_run_one(chunk_policy, tiny_vla):
    assert chunk_policy.open_loop_steps(None) == K and chunk_policy.open_loop_steps(2) == 2
    with pytest.raises(ValueError, match="more than the model's chunk of 4"):
        chunk_policy.open_loop_steps(K + 1)
    tokens = Policy(tiny_vla)
    assert not tokens.is_chunked and tokens.open_loop_steps(None) == 1
    with pytest.raises(ValueError, match="token model"):
        tokens.open_loop_steps(2)


def test_token_policy_takes_an_env_observation_bit_identically(tiny_vla):
    """Rollouts now pass the whole observation; a one-view model without proprio ignores the rest."""
    policy = Policy(tiny_vla, preprocessing="openvla-eval")
    obs = observation(4)
    assert policy.proprio_dim == 0
    action = policy(obs, "move to the red block")
    assert action.shape == (D,)
    np.testing.assert_array_equal(action, policy.act(obs["image"], "move to the red block"))
    np.testing.assert_array_equal(action, policy.predict_batch([obs["image"]], ["move to the red block"])[0])
    with pytest.raises(ValueError, match="takes no proprio"):
        policy.predict_batch([obs["image"]], ["go"], proprio=[obs["state"]])


def test_token_model_with_views_and_proprio_answers_one_action():
    """Views and proprio work with the tokens head too (docs/action-chunks.md): one action [D] per query."""
    torch.manual_seed(0)
    model = build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats={"sim": {"action": ACTION_STATS,
                      "proprio": PROPRIO_STATS}}, image_views=("primary", "wrist"), use_proprio=True).eval()
    policy = Policy(model)
    obs = observation(8)
    action = policy.act(obs, "go")
    assert action.shape == (D,) and np.all(np.isfinite(action)) and policy.open_loop_steps(None) == 1
    np.testing.assert_array_equal(action, policy.predict_batch([{"primary": obs["image"], "wrist": obs["wrist_image"]}],
                                                               ["go"], proprio=[obs["state"]])[0])


# ---------------------------------------------------------------- rollouts


class ScriptedChunks:
    """Answers chunks [k, 7] of x-steps 0.05; counts queries and logs the observations it saw."""

    def __init__(self, k: int):
        self.k, self.queries, self.seen = k, 0, []

    def __call__(self, obs, instruction):
        self.queries += 1
        self.seen.append(int(obs["image"][0, 0, 0]))
        return np.tile([0.05, 0, 0, 0, 0, 0, 1.0], (self.k, 1)) * [[1 + i / 100] + [1] * 6 for i in range(self.k)]


@pytest.mark.parametrize("n_open_loop,queries", [(None, math.ceil(10 / 4)), (3, math.ceil(10 / 3)), (1, 10)])
def test_rollout_runs_open_loop_steps_of_each_chunk(n_open_loop, queries):
    env, policy = LineEnv(), ScriptedChunks(k=4)
    episode = run_episode(env, policy, TaskSpec("far", "go right", 10), init_state=0, num_steps_wait=0,
                          num_open_loop_steps=n_open_loop)
    assert episode.steps == 10 and not episode.success and policy.queries == queries == len(episode.latencies_s)
    per_chunk = n_open_loop or 4
    expected = [0.05 * (1 + (t % per_chunk) / 100) for t in range(10)]  # chunk position of every executed action
    np.testing.assert_allclose([a[0] for a in env.actions], expected)
    assert np.all(np.diff(policy.seen) > 0)  # every query sees the observation after the last executed action


def test_rollout_refuses_more_open_loop_steps_than_the_answer_has():
    with pytest.raises(ValueError, match="answered 4 action"):
        run_episode(LineEnv(), ScriptedChunks(k=4), TaskSpec("far", "go right", 10), 0, 0, num_open_loop_steps=5)
    with pytest.raises(ValueError, match=r"action \[D\] or a chunk \[K, D\]"):
        open_loop_actions(np.zeros((2, 4, 7)))
    assert len(open_loop_actions(np.zeros(7))) == 1  # a token model's action is a chunk of one


def test_evaluate_records_open_loop_steps_only_when_given(tmp_path):
    chunked = evaluate(LineSuite(), ScriptedChunks(k=4), tmp_path / "a", num_trials_per_task=1, num_steps_wait=0,
                       num_open_loop_steps=2, progress=False)
    plain = evaluate(LineSuite(), ScriptedChunks(k=1), tmp_path / "b", num_trials_per_task=1, num_steps_wait=0,
                     progress=False)
    assert chunked["settings"]["num_open_loop_steps"] == 2 and "num_open_loop_steps" not in plain["settings"]
    assert [t["mean_steps"] for t in chunked["tasks"]] == [t["mean_steps"] for t in plain["tasks"]] == [8, 3]


# ---------------------------------------------------------------- wire


def test_wire_round_trips_a_chunk_in_every_answer_form():
    chunk = np.random.default_rng(0).normal(size=(K, D))
    np.testing.assert_array_equal(loads(encode_action(chunk), 1 << 20), chunk)
    assert json.loads(encode_action(chunk, plain_lists=True)) == chunk.tolist()
    np.testing.assert_array_equal(json_numpy.loads(json.loads(encode_action(chunk, double_encoded=True))), chunk)
    action = chunk[0]
    assert encode_action(action) == dumps(action)  # token answers keep their bytes


def _payload(**fields) -> bytes:
    obs = observation(5)
    body = {"image": obs["image"], "instruction": "go"} | fields
    return dumps({k: v for k, v in body.items() if v is not None}).encode()


def test_wire_decodes_views_and_proprio_with_oft_names():
    obs = observation(5)
    request = parse_act_payload(_payload(wrist_image=obs["wrist_image"], proprio=obs["state"]), 256)
    np.testing.assert_array_equal(request.wrist_image, obs["wrist_image"])
    assert request.proprio.dtype == np.float64 and np.array_equal(request.proprio, obs["state"])
    oft = parse_act_payload(_payload(image=None, full_image=obs["image"], wrist_image=obs["wrist_image"],
                                     state=obs["state"].tolist()), 256)
    np.testing.assert_array_equal(oft.image, obs["image"])
    np.testing.assert_array_equal(oft.proprio, request.proprio)
    assert parse_act_payload(_payload(), 256).wrist_image is None


BAD_FIELDS = {
    "wrist not RGB": (dict(wrist_image=np.zeros((8, 8), np.uint8)), r"'wrist_image' must have shape \[H, W, 3\]", 422),
    "wrist float": (dict(wrist_image=np.zeros((8, 8, 3), np.float32)), "'wrist_image' must have dtype uint8", 422),
    "wrist too large": (dict(wrist_image=np.zeros((300, 8, 3), np.uint8)), "largest side", 413),
    "NaN proprio": (dict(proprio=np.array([0.0, np.nan])), "NaN", 422),
    "NaN proprio list": (dict(state=[0.0, float("nan")]), "NaN", 422),
    "2-D proprio": (dict(proprio=np.zeros((2, 4))), r"1-D array \[P\]", 422),
    "bool proprio": (dict(proprio=[True, False]), "numbers only", 422),
    "huge proprio": (dict(proprio=np.zeros(1000)), "at most 256", 413),
    "image and full_image": (dict(full_image=np.zeros((8, 8, 3), np.uint8)), "either 'image' or 'full_image'", 422),
    "proprio and state": (dict(proprio=[0.0], state=[0.0]), "either 'proprio' or 'state'", 422),
}


@pytest.mark.parametrize("fields,message,status", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_wire_refuses_bad_views_and_proprio(fields, message, status):
    with pytest.raises(PayloadError, match=message) as err:
        parse_act_payload(_payload(**fields), 256)
    assert err.value.status == status


# ---------------------------------------------------------------- server, client, batching, robot


@pytest.fixture(scope="module")
def chunk_server(chunk_policy):
    app = create_app(chunk_policy, ServeSettings(max_batch_size=8, max_wait_ms=50, max_image_side=256))
    with BackgroundServer(app) as running:
        running.app = app
        yield running


def test_server_answers_chunks_and_batches_them_like_unbatched(chunk_server, chunk_policy):
    observations = [observation(10 + i) for i in range(6)]
    expected = [chunk_policy.act(obs, "stack the cups") for obs in observations]
    info = PolicyClient(chunk_server.url).info()
    assert {k: info[k] for k in MODEL_INPUTS} == {"action_head": "l1", "chunk_size": K, "image_views": ["primary", "wrist"],
                                                  "proprio_dim": P}
    before = chunk_server.app.state.batcher.stats()

    def ask(obs):
        client = PolicyClient(chunk_server.url)
        try:
            return client.act({**obs, "extra_camera": obs["image"]}, "stack the cups")  # the client sends what the model takes
        finally:
            client.close()

    with ThreadPoolExecutor(len(observations)) as pool:
        answers = list(pool.map(ask, observations))
    for answer, want in zip(answers, expected):
        assert answer.shape == (K, D)
        np.testing.assert_allclose(answer, want, atol=1e-6)
    assert chunk_server.app.state.batcher.stats()["largest_batch"] > 1
    assert chunk_server.app.state.batcher.stats()["requests_served"] - before["requests_served"] == len(observations)


def test_oft_style_request_gets_the_chunk(chunk_server, chunk_policy):
    """OpenVLA-OFT's deploy client: json_numpy with full_image / wrist_image / state."""
    obs = observation(20)
    body = json_numpy.dumps({"full_image": obs["image"], "wrist_image": obs["wrist_image"], "state": obs["state"],
                             "instruction": "open the drawer"})
    response = requests.post(chunk_server.url + "/act", data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(json_numpy.loads(response.text), chunk_policy.act(obs, "open the drawer"), atol=1e-6)


def _post(url: str, **fields) -> requests.Response:
    return requests.post(url + "/act", data=_payload(**fields), headers={"Content-Type": "application/json"}, timeout=60)


def test_server_refuses_inputs_the_model_does_not_take(chunk_server, tiny_vla):
    obs = observation(6)
    for fields, message in ((dict(proprio=obs["state"]), "missing ['wrist']"),
                            (dict(wrist_image=obs["wrist_image"]), "proprio"),
                            (dict(wrist_image=obs["wrist_image"], proprio=np.zeros(3)), "shape [8]"),
                            (dict(wrist_image=np.zeros((8, 8, 4), np.uint8), proprio=obs["state"]), "wrist_image"),
                            (dict(wrist_image=obs["wrist_image"], proprio=[0.0] * 7 + [float("nan")]), "NaN")):
        response = _post(chunk_server.url, **fields)
        assert response.status_code == 422 and message in response.json()["detail"], (fields.keys(), response.text)
    with BackgroundServer(create_app(Policy(tiny_vla), ServeSettings(max_batch_size=1))) as tokens:
        response = _post(tokens.url, proprio=obs["state"])
        assert response.status_code == 422 and "takes no proprio" in response.json()["detail"]
        response = _post(tokens.url, wrist_image=obs["wrist_image"])
        assert response.status_code == 422 and "does not take ['wrist']" in response.json()["detail"]
        assert np.shape(loads(_post(tokens.url).content, 1 << 20)) == (D,)


def test_microbatcher_never_mixes_requests_with_different_inputs():
    calls: list[tuple[str, ...]] = []

    def fake_predict(images, instructions, unnorm_key, proprio=None):
        calls.append(tuple(instructions))
        views = [sorted(image) if isinstance(image, dict) else None for image in images]
        assert len({str(v) for v in views}) == 1, "one call, one view layout"
        offset = 0.0 if proprio is None else float(np.sum(proprio))
        return np.stack([np.full((K, D), offset + i) for i in range(len(images))])

    async def scenario():
        batcher = MicroBatcher(fake_predict, max_batch_size=8, max_wait_ms=100)
        await batcher.start()
        try:
            jobs = [batcher.submit({"primary": np.zeros(1), "wrist": np.zeros(1)}, "chunk+proprio", "a", np.ones(2)),
                    batcher.submit({"primary": np.zeros(1)}, "primary only", "a"),
                    batcher.submit({"primary": np.zeros(1), "wrist": np.zeros(1)}, "chunk+proprio", "a", np.ones(2)),
                    batcher.submit(np.zeros(1), "bare image", "a")]
            return await asyncio.gather(*jobs)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert sorted(calls) == sorted([("chunk+proprio", "chunk+proprio"), ("primary only",), ("bare image",)])
    assert [r.shape for r in results] == [(K, D)] * 4
    assert results[0][0, 0] == 4.0 and results[2][0, 0] == 5.0  # each request its own row (proprio sum 4 + index)


class ObservingRobot:
    """A robot whose observations carry a wrist camera and an 8-D state; logs applied actions."""

    def __init__(self):
        self.applied: list[np.ndarray] = []

    def reset(self):
        self.applied = []
        return self.get_observation()

    def get_observation(self):
        return observation(30 + len(self.applied))

    def apply_action(self, action):
        self.applied.append(np.array(action))

    def stop(self):
        pass

    def close(self):
        pass


def test_robot_loop_runs_chunks_open_loop_through_the_client(chunk_server, tmp_path):
    client = PolicyClient(chunk_server.url)
    robot = ObservingRobot()
    loop = ControlLoop(client, robot, "stack the cups", control_hz=1000, max_steps=6)
    loop.run(episodes=1, out_dir=tmp_path)
    recording = loop.recordings[0]
    assert recording.queried == [True, False, False, False, True, False]  # K = 4 open-loop steps, then ask again
    first = client.act(observation(30), "stack the cups")
    np.testing.assert_allclose(np.stack(robot.applied[:4]), first, atol=1e-6)


def test_study_handles_chunks_and_cases_with_wrist_and_state(chunk_policy, tmp_path):
    obs = observation(40)
    np.save(tmp_path / "table.npy", obs["image"])
    np.save(tmp_path / "wrist.npy", obs["wrist_image"])
    cases = [{"id": f"c{i}", "image": "table.npy", "wrist_image": "wrist.npy", "state": obs["state"].tolist(),
              "instruction": text} for i, text in enumerate(["pick up the screw", "pick up the red screw"])]
    (tmp_path / "suite.json").write_text(json.dumps({"name": "chunks", "cases": cases}))
    report = run_study(chunk_policy, load_suite(tmp_path / "suite.json"), repeats=2)
    assert np.shape(report["cases"][0]["mean_action"]) == (K, D) and report["cases"][0]["max_deviation"] == 0.0
    np.testing.assert_allclose(report["cases"][1]["mean_action"], chunk_policy.act(obs, "pick up the red screw"))
    out = write_report(report, tmp_path / "out")
    header = (out / "cases.csv").read_text().splitlines()[0].split(",")
    assert header[-1] == f"action_{K - 1}_{D - 1}" and len(header) == 7 + K * D
    assert len(report["pairs"]) == 1


def test_eval_entry_runs_a_chunk_model_open_loop_on_the_sim(chunk_model, tmp_path):
    """eval.py end to end: exported chunk model (wrist view + proprio from the sim's 7-D state), K-step chunks."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_cli
    from vla.eval.app import run_eval
    from vla.models import save_vla

    save_vla(chunk_model, tmp_path / "export")
    cfg = compose_cli("eval", f"checkpoint={tmp_path / 'export'}", "env=sim", "task_suite=sim_reach", "unnorm_key=sim",
                      "num_trials_per_task=1", "task_ids=[0]", "max_steps=6", "progress=false",
                      f"out_dir={tmp_path / 'run'}")
    OmegaConf.resolve(cfg)
    results = run_eval(cfg)
    assert results["settings"]["num_open_loop_steps"] == K  # null: the whole chunk
    assert results["settings"]["proprio_from_state"] == [0, 1, 2, 3, 4, 5, None, 6]  # conf/env/sim.yaml
    record = json.loads((tmp_path / "run" / "episodes.jsonl").read_text())
    assert record["error"] is None and record["steps"] == 6 and record["mean_latency_s"] > 0
    cfg.num_open_loop_steps = K + 1
    with pytest.raises(ValueError, match="more than the model's chunk"):
        run_eval(cfg)


def test_sim_robot_reports_its_state_in_the_proprio_layout():
    from vla.robot.sim import SimRobot

    raw = SimRobot("sim_reach", image_size=32).reset()["state"]
    robot = SimRobot("sim_reach", image_size=32, wrist_image=True, proprio_from_state=[0, 1, 2, 3, 4, 5, None, 6])
    observed = robot.reset()
    np.testing.assert_array_equal(observed["state"], np.insert(raw, 6, 0.0))
    assert observed["wrist_image"].shape == (32, 32, 3)
    robot.apply_action(np.zeros(7))
    assert robot.get_observation()["state"].shape == (P,)


def test_robot_loop_refuses_more_actions_per_query_than_the_answer_has(tmp_path):
    class OneAction:
        def act(self, observation, instruction, unnorm_key=None):
            return np.zeros(D)

    loop = ControlLoop(OneAction(), ObservingRobot(), "wave", control_hz=1000, max_steps=3, actions_per_query=2)
    with pytest.raises(ValueError, match="answered 1 action"):
        loop.run(episodes=1, out_dir=tmp_path)
