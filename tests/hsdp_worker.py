"""A rank of the 4-process HSDP test (its own module: spawned processes import only torch and the plan)."""

from __future__ import annotations

import copy

import torch

from vla.training.sharding import FSDPPlan


def hsdp_step(rank: int, world: int, port: int, replicate: int, results: dict) -> None:
    """One rank: a 2-layer model sharded by ``FSDPPlan.device_mesh``, one step on this rank's own batch."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        reference = copy.deepcopy(model)
        data_parallel = init_device_mesh("cpu", (world, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))["data_parallel"]
        plan = FSDPPlan(replicate_degree=replicate, shard_degree=world // replicate)
        mesh = plan.device_mesh(data_parallel)
        for layer in model:
            fully_shard(layer, mesh=mesh, mp_policy=plan.mp_policy())
        fully_shard(model, mesh=mesh, mp_policy=plan.mp_policy())
        inputs = torch.arange(world * 3 * 4, dtype=torch.float32).reshape(world, 3, 4) / 10
        model(inputs[rank]).square().mean().backward()
        reference(inputs.reshape(-1, 4)).square().mean().backward()  # the whole global batch on one model
        weight = model[0].weight
        results[rank] = {
            "mesh": (mesh.mesh_dim_names, tuple(mesh.shape)),
            "placements": tuple(type(p).__name__ for p in weight.placements),
            "local_rows": weight.to_local().shape[0],
            "grad_matches_global_batch": torch.allclose(weight.grad.full_tensor(), reference[0].weight.grad, atol=1e-6),
        }
    finally:
        dist.destroy_process_group()
