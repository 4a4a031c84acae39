"""data_prep robustness: resume after an interruption, split across machines, CLI config, workers.

The reference is a single uninterrupted in-process run; every variant must give identical bytes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_data_prep import REPO_ROOT, tree_bytes, write_sim_rlds

from data_prep import prepare


@pytest.fixture(scope="module")
def sim_source(tmp_path_factory) -> Path:
    return write_sim_rlds(tmp_path_factory.mktemp("rlds"), {"train": 6, "val": 2}, seed=4)


@pytest.fixture(scope="module")
def prepared(sim_source, tmp_path_factory) -> Path:
    """The reference: one uninterrupted in-process run."""
    return prepare(
        dataset="vla_sim", source=sim_source, out=tmp_path_factory.mktemp("prepared") / "vla_sim", shard_size_mb=0.02
    )


def test_interrupted_prep_resumes_to_identical_bytes(sim_source, prepared, tmp_path, monkeypatch):
    import data_prep.pipeline as prep_module
    from vla.data import shards

    real_write_task, calls = prep_module._write_task, []

    def interrupted(task):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(task)
        return real_write_task(task)

    monkeypatch.setattr(prep_module, "_write_task", interrupted)
    out = tmp_path / "vla_sim"
    with pytest.raises(KeyboardInterrupt):
        prepare(dataset="vla_sim", source=sim_source, out=out, shard_size_mb=0.02)
    assert not (out / "manifest.json").exists() and len(list(out.glob("*.tar"))) == 2
    (out / "train-000002.tar.tmp").write_bytes(b"half-written")  # a shard cut off mid-write
    monkeypatch.setattr(prep_module, "_write_task", real_write_task)
    statistics = (out / "dataset_statistics.json").read_bytes()
    (out / "dataset_statistics.json").unlink()
    with pytest.raises(FileNotFoundError, match="dataset_statistics.json"):
        prepare(dataset="vla_sim", source=sim_source, out=out, shard_size_mb=0.02)
    (out / "dataset_statistics.json").write_bytes(statistics)
    written = []

    def recording_write_shard(path, samples):
        written.append(Path(path).name)
        return shards.write_shard(path, samples)

    monkeypatch.setattr(prep_module, "write_shard", recording_write_shard)
    prepare(dataset="vla_sim", source=sim_source, out=out, shard_size_mb=0.02)
    assert "train-000000.tar" not in written and "train-000001.tar" not in written and written  # finished shards kept
    expected = tree_bytes(prepared)
    actual = {k: v for k, v in tree_bytes(out).items() if not k.endswith(".tmp")}
    assert actual.keys() == expected.keys()
    assert all(actual[name] == expected[name] for name in expected)


def test_shards_split_across_machines_merge_to_the_same_result(sim_source, prepared, tmp_path):
    out = tmp_path / "vla_sim"
    prepare(dataset="vla_sim", source=sim_source, out=out, shard_size_mb=0.02, shard_index=1, num_shards=2)
    assert not (out / "manifest.json").exists()
    prepare(dataset="vla_sim", source=sim_source, out=out, shard_size_mb=0.02, shard_index=0, num_shards=2)
    assert tree_bytes(out) == tree_bytes(prepared)


def test_hydra_cli_config_instantiates_prepare(sim_source, prepared, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    out = tmp_path / "vla_sim"
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base=None):
        cfg = compose(
            "data_prep", overrides=["dataset=vla_sim", f"source={sim_source}", f"out={out}", "shard_size_mb=0.02"]
        )
    assert Path(instantiate(cfg.prepare)) == out
    assert tree_bytes(out) == tree_bytes(prepared)


@pytest.mark.slow
def test_parallel_workers_give_identical_bytes(sim_source, prepared, tmp_path):
    out = prepare(dataset="vla_sim", source=sim_source, out=tmp_path / "vla_sim", shard_size_mb=0.02, num_workers=2)
    assert tree_bytes(out) == tree_bytes(prepared)
