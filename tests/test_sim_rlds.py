"""The sim demo generator writes a real RLDS tfds dataset (docs/contracts.md, "Sim demos (RLDS)"), deterministically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import MissingMandatoryValue

tfds = pytest.importorskip("tensorflow_datasets")

from vla.sim import SimTaskSuite  # noqa: E402
from data_prep.cli import sim as sim_cli  # noqa: E402
from data_prep.sim_rlds import generate_rlds  # noqa: E402
from tests.conftest import compose_cli  # noqa: E402
from vla.sim.demos import episode_plan, record_episode  # noqa: E402

PARAMS = {"episodes": 5, "seed": 7, "image_size": 64, "suite": "sim_all", "val_fraction": 0.2}


def read_split(data_dir: Path, split: str) -> list[dict]:
    builder = tfds.builder_from_directory(str(data_dir / "vla_sim" / "1.0.0"))
    return [{**episode, "steps": list(episode["steps"])} for episode in tfds.as_numpy(builder.as_dataset(split=split))]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return generate_rlds(tmp_path_factory.mktemp("sim_rlds"), progress=False, **PARAMS)


def test_dataset_is_readable_rlds_with_the_contract_fields(dataset_dir):
    builder = tfds.builder_from_directory(str(dataset_dir / "vla_sim" / "1.0.0"))
    assert builder.info.name == "vla_sim"
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == {"train": 4, "val": 1}
    suite = SimTaskSuite("sim_all")
    for split in ("train", "val"):
        for index, episode in enumerate(read_split(dataset_dir, split)):
            metadata, steps = episode["episode_metadata"], episode["steps"]
            assert metadata["episode_id"].decode() == f"{split}_{index:06d}"
            assert metadata["file_path"].decode() == f"vla_sim/{split}/episode_{index:06d}"
            task = suite.get_task(int(metadata["task_id"]))
            assert [s["is_first"] for s in steps] == [True] + [False] * (len(steps) - 1)
            assert [s["is_last"] for s in steps] == [s["is_terminal"] for s in steps] == [False] * (len(steps) - 1) + [True]
            assert [s["reward"] for s in steps] == [0.0] * (len(steps) - 1) + [1.0]
            for step in steps:
                assert step["language_instruction"].decode() == task.language
                assert step["observation"]["image"].shape == step["observation"]["wrist_image"].shape == (64, 64, 3)
                assert step["observation"]["state"].dtype == step["action"].dtype == np.float32
                assert step["action"].shape == step["observation"]["state"].shape == (7,)
                assert step["action"][6] in (0.0, 1.0) and step["discount"] == 1.0


def test_generation_is_deterministic_and_matches_the_expert(dataset_dir, tmp_path):
    again = sim_cli(compose_cli("sim_demos", f"out={tmp_path}", "progress=false", *(f"{k}={v}" for k, v in PARAMS.items())))
    first, second = read_split(dataset_dir, "train"), read_split(again, "train")
    suite = SimTaskSuite("sim_all")
    plan = episode_plan(PARAMS["episodes"], PARAMS["seed"], suite)
    assert len(first) == len(second) == 4
    for (task_id, scene_seed), episode_a, episode_b in zip(plan[:4], first, second, strict=True):
        assert int(episode_a["episode_metadata"]["seed"]) == scene_seed
        expected = record_episode(suite, task_id, scene_seed, PARAMS["image_size"], noise_std=0.002)
        assert len(episode_a["steps"]) == len(episode_b["steps"]) == len(expected)
        for step_a, step_b, step in zip(episode_a["steps"], episode_b["steps"], expected, strict=True):
            np.testing.assert_array_equal(step_a["action"], step["action"])
            np.testing.assert_array_equal(step_a["observation"]["state"], step["observation"]["state"])
            np.testing.assert_array_equal(step_a["observation"]["image"], step_b["observation"]["image"])
            # JPEG is lossy but the flat-shaded render survives it closely.
            error = np.abs(step_a["observation"]["image"].astype(int) - step["observation"]["image"]).mean()
            assert error < 8.0


def test_existing_dataset_is_reused_and_a_mismatch_is_refused(dataset_dir):
    shard = next((dataset_dir / "vla_sim" / "1.0.0").glob("vla_sim-train.tfrecord*"))
    before = shard.stat().st_mtime_ns
    assert generate_rlds(dataset_dir, progress=False, **PARAMS) == dataset_dir
    assert shard.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="already holds a dataset"):
        generate_rlds(dataset_dir, progress=False, **{**PARAMS, "episodes": 6})


def test_bad_arguments_are_rejected_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        generate_rlds(tmp_path, episodes=4, val_fraction=1.0)
    with pytest.raises(ValueError, match="episodes"):
        generate_rlds(tmp_path, episodes=1)
    with pytest.raises(MissingMandatoryValue, match="out"):
        sim_cli(compose_cli("sim_demos", "episodes=3"))
    with pytest.raises(ConfigCompositionException, match="not_a_key"):
        compose_cli("sim_demos", f"out={tmp_path}", "not_a_key=1")
    assert not any(tmp_path.iterdir())
