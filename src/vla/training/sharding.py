"""How FSDP2 shards a VLA under ``strategy=fsdp``: the device mesh and the mixed-precision policy (``strategy.*``).

Mesh. Full sharding (the default): parameters, gradients and optimizer state are split over every rank, on one
mesh dim. HSDP (``strategy.hybrid=true``, or an explicit ``strategy.replicate_degree`` x ``strategy.shard_degree``):
a 2-D mesh ``("replicate", "shard")``; ``fully_shard`` shards over the ``shard`` dim (one node: the per-layer
all-gathers and reduce-scatters stay on the fast intra-node links) and keeps one full replica per ``replicate``
index (across nodes: one gradient all-reduce per step crosses the slower network). OpenVLA's ``fsdp-full-shard``
is FSDP1's ``HYBRID_SHARD``: this HSDP with one replica per node. Every rank is a data-parallel rank either way
(each reads its own batches), so Lightning's own mesh stays 1-D: ``data_parallel`` = world size,
``tensor_parallel`` = 1 (no tensor parallelism here).

Mixed precision. ``strategy.mixed_precision=bf16`` is OpenVLA's policy: parameters stay fp32 in the sharded
(master) copy the optimizer updates, are all-gathered and computed in bf16, and gradients are reduced in fp32.
Lightning's ``trainer.precision`` acts on top: ``32-true`` leaves the policy alone (pure FSDP2 mixed precision);
``bf16-mixed`` adds autocast, which keeps its fp32 ops (softmax, norms, losses) in fp32, as OpenVLA's
``torch.autocast`` around the FSDP policy does; ``bf16-true`` would cast the master weights themselves to bf16,
contradicting the policy, and ``16-mixed`` (fp16 autocast + loss scaling) is not offered by Lightning's
``ModelParallelStrategy``: both are refused at start-up (:func:`fsdp_config_problem`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import MixedPrecisionPolicy

# strategy.mixed_precision -> (param_dtype: all-gather + compute, reduce_dtype: gradient reduction)
MIXED_PRECISION_POLICIES: dict[str, tuple[torch.dtype, torch.dtype]] = {
    "bf16": (torch.bfloat16, torch.float32),
}
PRECISIONS_WITH_POLICY = ("32-true", "bf16-mixed")  # trainer.precision values that keep fp32 master weights
FSDP_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")  # what Lightning's ModelParallelStrategy runs (of ours)
FSDP_ONLY_KEYS = ("mixed_precision", "hybrid", "replicate_degree", "shard_degree")
MESH_DIMS = ("replicate", "shard")


@dataclass(frozen=True)
class FSDPPlan:
    """What ``configure_model`` passes to every ``fully_shard`` call.

    ``shard_degree=None``: shard over all ranks of Lightning's data-parallel mesh (full sharding, one replica).
    """

    replicate_degree: int = 1
    shard_degree: int | None = None
    reshard_after_forward: bool = True
    mixed_precision: str | None = None

    @classmethod
    def from_config(cls, strategy: Mapping[str, Any], num_nodes: int, devices: Any) -> FSDPPlan:
        """The plan ``strategy.*`` asks for on ``num_nodes`` x ``devices`` ranks (raises ValueError naming the keys)."""
        replicate, shard = mesh_degrees(strategy, num_nodes, devices_per_node(devices))
        return cls(replicate, shard, bool(strategy.get("reshard_after_forward", True)), strategy.get("mixed_precision"))

    def mp_policy(self) -> MixedPrecisionPolicy:
        """The FSDP2 policy; without ``mixed_precision`` the default one (no casts: compute in the stored dtype)."""
        from torch.distributed.fsdp import MixedPrecisionPolicy

        if self.mixed_precision is None:
            return MixedPrecisionPolicy()
        if self.mixed_precision not in MIXED_PRECISION_POLICIES:
            raise ValueError(f"strategy.mixed_precision={self.mixed_precision!r}: expected null or one of "
                             f"{', '.join(MIXED_PRECISION_POLICIES)}")
        param_dtype, reduce_dtype = MIXED_PRECISION_POLICIES[self.mixed_precision]
        return MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)

    def device_mesh(self, data_parallel: DeviceMesh) -> DeviceMesh:
        """The mesh ``fully_shard`` gets: ``data_parallel`` itself (full sharding, 1-D over every rank) or, for
        HSDP, a new 2-D ``("replicate", "shard")`` mesh over the same ranks (built collectively: every rank calls)."""
        world = data_parallel.size()
        shard = world if self.shard_degree is None else self.shard_degree
        if self.replicate_degree * shard != world:
            raise ValueError(f"FSDP mesh replicate {self.replicate_degree} x shard {shard} does not cover the "
                             f"{world} data-parallel ranks this run started (trainer.num_nodes x trainer.devices)")
        if self.replicate_degree == 1:
            return data_parallel
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(data_parallel.device_type, (self.replicate_degree, shard), mesh_dim_names=MESH_DIMS)


def devices_per_node(devices: Any) -> int:
    """``trainer.devices`` as a count: the FSDP mesh is built before Lightning resolves ``auto`` / ``-1``."""
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return devices
    if isinstance(devices, Sequence) and not isinstance(devices, str) and len(devices) > 0:
        return len(devices)
    raise ValueError(f"trainer.devices={devices!r}: strategy.name='fsdp' builds its device mesh from "
                     "trainer.num_nodes x trainer.devices, so give a number (>= 1) or a list of devices")


def mesh_degrees(strategy: Mapping[str, Any], num_nodes: int, devices: int) -> tuple[int, int]:
    """``(replicate, shard)`` degrees of the FSDP mesh for ``num_nodes`` x ``devices`` ranks.

    ``hybrid``: one replica per node, sharded over its devices; explicit degrees: any split of the world size;
    neither: one replica sharded over every rank.
    """
    world = num_nodes * devices
    hybrid = bool(strategy.get("hybrid", False))
    replicate, shard = strategy.get("replicate_degree"), strategy.get("shard_degree")
    if (replicate is None) != (shard is None):
        raise ValueError(f"strategy.replicate_degree={replicate!r}, strategy.shard_degree={shard!r}: set both "
                         f"(their product is the world size, {world}) or neither")
    if replicate is not None:
        if hybrid:
            raise ValueError("strategy.hybrid=true and strategy.replicate_degree / shard_degree both set: hybrid "
                             "means replicate_degree=trainer.num_nodes, shard_degree=trainer.devices; keep one")
        if replicate * shard != world:
            raise ValueError(f"strategy.replicate_degree={replicate} x strategy.shard_degree={shard} = "
                             f"{replicate * shard}, expected the world size trainer.num_nodes={num_nodes} x "
                             f"trainer.devices={devices} = {world}")
        return replicate, shard
    if hybrid:
        return num_nodes, devices
    return 1, world


def fsdp_config_problem(strategy: Mapping[str, Any], precision: str | None, num_nodes: int, devices: Any) -> str | None:
    """The first reason ``strategy.*`` cannot run with ``trainer.precision`` / the device count, or None."""
    name = strategy.get("name", "auto")
    if name != "fsdp":
        asked = [f"strategy.{key}={strategy[key]!r}" for key in FSDP_ONLY_KEYS
                 if strategy.get(key) not in (None, False)]
        if asked:
            return f"{', '.join(asked)}: FSDP2 options, they need strategy.name='fsdp' (got {name!r})"
        return None
    if precision is not None and precision not in FSDP_PRECISIONS:
        return (f"trainer.precision={precision!r} with strategy.name='fsdp': Lightning's ModelParallelStrategy runs "
                f"{', '.join(FSDP_PRECISIONS)} (bf16 needs no loss scaling)")
    policy = strategy.get("mixed_precision")
    if policy is not None and precision is not None and precision not in PRECISIONS_WITH_POLICY:
        return (f"strategy.mixed_precision={policy!r} with trainer.precision={precision!r}: the policy keeps fp32 "
                f"master weights and computes in {policy}, {precision} would store the weights themselves in "
                f"{policy}; use trainer.precision=32-true (policy only) or bf16-mixed (policy + autocast, OpenVLA)")
    try:
        mesh_degrees(strategy, num_nodes, devices_per_node(devices))
    except ValueError as error:
        return str(error)
    return None
