"""FSDP2 scale levers: the mixed-precision policy, the HSDP (replicate x shard) mesh, their start-up checks, and the
multi-node SLURM launch config (composed only: no SLURM here)."""

from __future__ import annotations

import copy
import socket

import pytest
import torch
from omegaconf import OmegaConf

from tests.hsdp_worker import hsdp_step
from tests.test_memory_levers import _batch
from tests.test_training import REPO, compose_train
from vla.training.config_checks import ConfigError, check_train_config
from vla.training.module import VLATrainingModule
from vla.training.sharding import FSDPPlan, devices_per_node, mesh_degrees


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ mesh degrees (no processes)
@pytest.mark.parametrize("strategy,nodes,devices,expected", [
    ({}, 2, 8, (1, 16)),                                           # full sharding over every rank
    ({"hybrid": True}, 2, 8, (2, 8)),                              # one replica per node (OpenVLA's HYBRID_SHARD)
    ({"hybrid": True}, 1, 8, (1, 8)),                              # one node: HSDP is full sharding
    ({"replicate_degree": 4, "shard_degree": 4}, 2, 8, (4, 4)),    # any split of the world size
    ({"replicate_degree": 16, "shard_degree": 1}, 2, 8, (16, 1)),  # pure replication (DDP through FSDP2)
])
def test_mesh_degrees(strategy, nodes, devices, expected):
    assert mesh_degrees(strategy, nodes, devices) == expected


@pytest.mark.parametrize("strategy,message", [
    ({"replicate_degree": 3, "shard_degree": 4}, r"replicate_degree=3 x strategy.shard_degree=4 = 12, expected the "
                                                 r"world size trainer.num_nodes=2 x trainer.devices=8 = 16"),
    ({"replicate_degree": 2}, r"set both"),
    ({"hybrid": True, "replicate_degree": 2, "shard_degree": 8}, r"strategy.hybrid=true and strategy.replicate_degree"),
])
def test_mesh_degrees_refuse_what_does_not_fit(strategy, message):
    with pytest.raises(ValueError, match=message):
        mesh_degrees(strategy, 2, 8)


def test_devices_per_node_needs_a_count():
    assert devices_per_node(8) == 8 and devices_per_node("4") == 4 and devices_per_node([0, 2]) == 2
    for bad in ("auto", -1, 0, True):
        with pytest.raises(ValueError, match=r"trainer.devices=.*number \(>= 1\) or a list"):
            devices_per_node(bad)


# ------------------------------------------------------------------ compose-time checks
@pytest.mark.parametrize("overrides,named", [
    (("strategy=fsdp", "strategy.mixed_precision=bf16", "trainer.precision=bf16-true"),
     "strategy.mixed_precision='bf16' with trainer.precision='bf16-true'"),
    (("strategy=fsdp", "trainer.precision=16-mixed"), "trainer.precision='16-mixed' with strategy.name='fsdp'"),
    (("strategy=ddp", "strategy.mixed_precision=bf16"), "strategy.mixed_precision='bf16': FSDP2 options, they need strategy.name='fsdp'"),
    (("strategy=ddp", "strategy.hybrid=true"), "strategy.hybrid=True: FSDP2 options"),
    (("strategy=fsdp", "strategy.replicate_degree=2", "strategy.shard_degree=2", "trainer.devices=2"),
     "strategy.replicate_degree=2 x strategy.shard_degree=2 = 4, expected the world size trainer.num_nodes=1 x trainer.devices=2 = 2"),
    (("strategy=fsdp", "trainer.devices=auto"), "trainer.devices='auto': strategy.name='fsdp' builds its device mesh"),
    (("strategy=fsdp", "strategy.mixed_precision=fp8"), "strategy.mixed_precision='fp8': expected null or one of bf16"),
    (("strategy=fsdp", "strategy.shard_degree=0"), "strategy.shard_degree=0: expected an integer >= 1 or null"),
    (("trainer.num_nodes=0",), "trainer.num_nodes=0: expected an integer >= 1"),
])
def test_contradictory_strategy_options_fail_at_start_up(tmp_path, overrides, named):
    with pytest.raises(ConfigError) as error:
        check_train_config(compose_train(tmp_path, tmp_path / "no-data", *overrides))
    assert named in str(error.value)


@pytest.mark.parametrize("overrides", [
    ("strategy=fsdp", "strategy.mixed_precision=bf16", "trainer.precision=32-true"),    # policy only
    ("strategy=fsdp", "strategy.mixed_precision=bf16", "trainer.precision=bf16-mixed"),  # policy + autocast (OpenVLA)
    ("strategy=fsdp", "trainer.precision=bf16-true"),                                    # bf16 weights, no policy
    ("strategy=fsdp-hybrid", "trainer.num_nodes=2", "trainer.devices=8", "trainer.precision=bf16-mixed"),
    ("strategy=fsdp-grad-op", "strategy.replicate_degree=2", "strategy.shard_degree=4", "trainer.devices=8"),
])
def test_valid_strategy_combinations_pass(tmp_path, overrides):
    check_train_config(compose_train(tmp_path, tmp_path / "no-data", *overrides))


def test_fsdp_strategy_files_share_their_options(tmp_path):
    hybrid = compose_train(tmp_path, tmp_path, "strategy=fsdp-hybrid", "trainer.num_nodes=2", "trainer.devices=8").strategy
    assert (hybrid.name, hybrid.hybrid, hybrid.mixed_precision, hybrid.reshard_after_forward) == ("fsdp", True, "bf16", True)
    grad_op = compose_train(tmp_path, tmp_path, "strategy=fsdp-grad-op").strategy
    assert (grad_op.reshard_after_forward, grad_op.hybrid, grad_op.mixed_precision) == (False, False, None)
    plan = FSDPPlan.from_config(hybrid, 2, 8)
    assert plan == FSDPPlan(replicate_degree=2, shard_degree=8, reshard_after_forward=True, mixed_precision="bf16")


def test_fsdp_world_size_reaches_lightning_data_parallel_mesh():
    """Lightning's default sizes (nodes x devices per node) would put a node's ranks in the unused tensor-parallel dim."""
    from vla.training.run import build_strategy

    strategy = build_strategy(OmegaConf.create({"name": "fsdp"}), world_size=16)
    assert (strategy._data_parallel_size, strategy._tensor_parallel_size) == (16, 1)


# ------------------------------------------------------------------ the policy on every fully_shard (1 gloo process)
def test_bf16_policy_on_every_fully_shard_keeps_fp32_master_weights_and_computes_in_bf16(tiny_vla, monkeypatch):
    import torch.distributed as dist
    import torch.distributed.fsdp as fsdp_api
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy

    calls = []
    real_fully_shard = fsdp_api.fully_shard
    monkeypatch.setattr(fsdp_api, "fully_shard", lambda module, **kwargs: calls.append(kwargs) or real_fully_shard(module, **kwargs))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        module = VLATrainingModule(copy.deepcopy(tiny_vla), stage="vla-full-train", fsdp=FSDPPlan(mixed_precision="bf16"))
        module._device_mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
        module.configure_model()
        vla = module.vla
        compute = {}
        watched = {"llm_layer": vla.llm_backbone.layers[0].mlp.down_proj, "vit_block": vla.vision_backbone.featurizer.blocks[0].mlp.fc1,
                   "output_head": vla.llm_backbone.llm.get_output_embeddings()}
        for name, linear in watched.items():
            linear.register_forward_hook(lambda mod, args, out, name=name: compute.__setitem__(name, (args[0].dtype, mod.weight.dtype, out.dtype)))
        batch = _batch(vla)
        out = vla(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        out.loss.backward()
        params = {name: (p.dtype, p.grad.dtype) for name, p in vla.named_parameters() if p.requires_grad}
    finally:
        dist.destroy_process_group()
    blocks = len(vla.llm_backbone.layers) + sum(len(vit.blocks) for vit in vla.vision_backbone.featurizers)
    assert len(calls) == blocks + 1  # every block, then the root
    bf16_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    assert all(call["mp_policy"] == bf16_policy for call in calls)
    assert compute == dict.fromkeys(watched, (torch.bfloat16,) * 3)  # inputs, gathered weights and outputs: bf16
    assert set(params.values()) == {(torch.float32, torch.float32)}  # sharded master weights and their grads: fp32
    assert torch.isfinite(out.loss)


# ------------------------------------------------------------------ HSDP on 4 gloo processes
@pytest.mark.slow  # 4 spawned processes: ~25 s on 2 shared cores
def test_hsdp_mesh_replicates_across_and_shards_within_groups():
    """4 ranks as 2 "nodes" x 2 "devices": dim 0 replicates, dim 1 shards, gradients average over all 4 batches."""
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.start_processes(hsdp_step, args=(4, _free_port(), 2, results), nprocs=4, start_method="spawn")
    assert sorted(results) == [0, 1, 2, 3]
    for rank, result in results.items():
        assert result["mesh"] == (("replicate", "shard"), (2, 2)), rank
        assert result["placements"] == ("Replicate", "Shard"), rank
        assert result["local_rows"] == 4, rank  # 8 rows sharded over 2 ranks, each replica whole across the pair
        assert result["grad_matches_global_batch"], rank


# ------------------------------------------------------------------ SLURM multi-node (compose only)
def test_two_node_hsdp_slurm_launch_composes(tmp_path):
    """The docs/clusters.md command: SLURM nodes / tasks per node / GPUs from trainer.num_nodes x trainer.devices."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=[
            "launcher=submitit_slurm", "model=dinosiglip", "head=tokens", "strategy=fsdp-hybrid", "precision=bf16-mixed",
            "trainer.num_nodes=2", "trainer.devices=8", "data.datamodule.batch_size=16",
            "trainer.accumulate_grad_batches=1", "hydra.launcher.partition=gpu",
        ])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 8, 8)
    assert cfg.trainer.num_nodes == 2 and cfg.trainer.devices == 8
    assert FSDPPlan.from_config(cfg.strategy, cfg.trainer.num_nodes, cfg.trainer.devices) == FSDPPlan(2, 8, True, "bf16")
    check_train_config(cfg)
    # OpenVLA's global batch: 2 nodes x 8 GPUs x 16 per device x no accumulation.
    assert 2 * 8 * cfg.data.datamodule.batch_size * cfg.trainer.accumulate_grad_batches == 256


# ------------------------------------------------------------------ through train.py: 2 gloo processes under Lightning
@pytest.mark.slow
@pytest.mark.parametrize("strategy", [
    ("strategy=fsdp", "strategy.mixed_precision=bf16", "trainer.precision=32-true"),  # full sharding, bf16 all-gathers
    ("strategy=fsdp", "strategy.replicate_degree=2", "strategy.shard_degree=1"),      # the 2-D HSDP mesh
])
def test_two_process_cpu_training_with_fsdp_levers(tmp_path, sim_data_root, strategy):
    from tests.test_training import _run_train_py

    result = _run_train_py(tmp_path, sim_data_root, *strategy, "trainer.devices=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Training finished" in result.stdout
    assert (tmp_path / "run" / "export" / "model.safetensors").exists()
