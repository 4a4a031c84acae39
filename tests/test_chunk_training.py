"""train.py with OpenVLA-OFT chunk policies (head=l1): training, chunk metrics, stages, export, resume, config errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_cli
from tests.test_training import LossRecorder, SimulatedKill, WeightSnapshots, _run_train_py, compose_train, logged_rows
from vla.training.config_checks import ConfigError
from vla.training.run import train

# K=8 chunks, primary + wrist views, proprio and FiLM on the tiny model (OFT+ in small).
CHUNK_POLICY = ("head=l1", "head.chunk_size=8", "data.image_views=[primary,wrist]", "data.proprio=true", "model.film=true")
CHUNK = (*CHUNK_POLICY, "data.datamodule.batch_size=2")
SHORT = ("trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "checkpoint_every_n_steps=2")


def chunk_stats() -> dict:
    """One dataset's statistics with 7-D actions and 8-D proprio (what sizes the l1 head and proprio token)."""
    part = lambda n: {"q01": [-1.0] * n, "q99": [1.0] * n, "min": [-1.0] * n, "max": [1.0] * n, "mean": [0.0] * n,
                      "std": [1.0] * n, "mask": [True] * n}
    return {"sim": {"action": part(7), "proprio": part(8)}}


@pytest.fixture(scope="module")
def chunk_vla():
    from vla.models import build_vla

    torch.manual_seed(0)
    return build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=chunk_stats(), action_head="l1", chunk_size=4,
                     image_views=("primary", "wrist"), use_proprio=True, film=True)


def added_parameter_names_in(names) -> set[str]:
    """Of ``names``, the parameters OpenVLA-OFT adds: action head, proprio projector, FiLM scale/shift."""
    return {name for name in names
            if name.startswith(("action_head.", "proprio_projector.")) or ".scale." in name or ".shift." in name}


def test_chunk_run_trains_logs_chunk_metrics_and_exports(tmp_path, sim_data_root):
    cfg = compose_train(tmp_path, sim_data_root, *CHUNK, *SHORT)
    assert cfg.run_name.endswith("__l1-k8")
    metrics = train(cfg)
    assert metrics["global_step"] == 4 and np.isfinite(metrics["val/loss"])
    rows = logged_rows(tmp_path)
    columns = set().union(*rows)
    per_step = {f"{split}/l1/t{k}" for split in ("train", "val") for k in range(8)}
    per_dim = {f"{split}/l1/dim{i}" for split in ("train", "val") for i in range(7)}
    assert {"train/loss_step", "train/l1_step", "val/loss", "val/l1"} | per_step | per_dim <= columns, sorted(columns)
    assert not any("action_accuracy" in column for column in columns)  # a tokens metric
    assert all(np.isfinite(float(row[c])) for row in rows for c in row if c.startswith(("train/", "val/")))

    from vla.cli import export as export_cli
    from vla.models import load_vla
    from vla.policy import Policy

    saved = json.loads((tmp_path / "export" / "vla_config.json").read_text())
    assert {k: saved[k] for k in ("action_head", "chunk_size", "action_dim", "image_views", "proprio_dim", "film")} == {
        "action_head": "l1", "chunk_size": 8, "action_dim": 7, "image_views": ["primary", "wrist"], "proprio_dim": 8,
        "film": True}
    image = np.zeros((224, 224, 3), dtype=np.uint8)
    ask = lambda model: Policy(model).predict_batch([{"primary": image, "wrist": image}], ["move to the red block"],
                                                    proprio=[np.zeros(8, dtype=np.float32)])
    chunk = ask(load_vla(tmp_path / "export"))
    assert chunk.shape == (1, 8, 7) and np.isfinite(chunk).all()
    # vla-export of last.ckpt is the same model as the end-of-run export
    out = export_cli(compose_cli("export", f"ckpt={tmp_path / 'checkpoints' / 'last.ckpt'}", f"out={tmp_path / 'again'}"))
    np.testing.assert_array_equal(ask(load_vla(out)), chunk)


def test_chunk_run_resumes_bit_exactly_after_a_kill(tmp_path, sim_data_root):
    common = (*CHUNK, *SHORT, "export=false")
    straight = LossRecorder()
    train(compose_train(tmp_path / "a", sim_data_root, *common), callbacks=[straight])
    with pytest.raises(SimulatedKill):
        train(compose_train(tmp_path / "b", sim_data_root, *common), callbacks=[LossRecorder(crash_at_step=3)])
    resumed = LossRecorder()
    train(compose_train(tmp_path / "b", sim_data_root, *common, "resume=auto"), callbacks=[resumed])
    assert sorted(resumed.losses) == [3, 4]
    for step in (3, 4):
        assert resumed.losses[step] == pytest.approx(straight.losses[step], rel=1e-5, abs=1e-6), step
    whole, after = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("a", "b"))
    whole.pop("curves"), after.pop("curves")
    assert "train/l1/t7" in whole and after == whole  # the epoch breakdowns cover all 4 steps after the resume


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_cpu_chunk_training(tmp_path, sim_data_root, strategy):
    """DDP (no unused trainable parameter: the LLM output head is frozen) and FSDP2 (FiLM-wrapped ViT blocks
    sharded like plain ones) on two CPU processes; the export predicts chunks."""
    result = _run_train_py(tmp_path, sim_data_root, *CHUNK_POLICY, f"strategy={strategy}", "trainer.devices=2",
                           f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    from vla.models import load_vla

    exported = load_vla(tmp_path / "run" / "export")
    assert (exported.config.action_head, exported.config.chunk_size, exported.config.film) == ("l1", 8, True)


class StateSnapshots(WeightSnapshots):
    """Also the names of the parameters that never get gradients (the ViT tail, FiLM layers there included)."""

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        unused = {id(p) for p in pl_module.vla.vision_backbone.unused_parameters()}
        self.unused = {name for name, p in pl_module.vla.named_parameters() if id(p) in unused}


def test_lora_chunk_run_trains_adapters_and_added_modules_only(tmp_path, sim_data_root):
    """OFT's setting: adapters on the whole VLA with frozen bases, the new modules trained in full (here with
    activation checkpointing, which recomputes the FiLM-wrapped ViT blocks too). Trainable-only step checkpoints
    keep the new modules and resume."""
    lora = (*CHUNK, "head.chunk_size=2", "stage=lora", "stage.lora.r=4", "stage.lora.adapt_vision_and_projector=true",
            "module.activation_checkpointing=true", "trainer.limit_val_batches=0", "checkpoint_every_n_steps=2",
            "checkpoint_trainable_only=true")
    snapshots = StateSnapshots()
    train(compose_train(tmp_path, sim_data_root, *lora, "trainer.max_steps=2"), callbacks=[snapshots])
    before, after = snapshots.before, snapshots.after
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    added = added_parameter_names_in(before) - snapshots.unused
    adapters_b = {name for name in before if ".lora_B." in name} - snapshots.unused
    base = {name for name in before if ".lora_" not in name} - added_parameter_names_in(before)
    assert added and adapters_b and base
    assert added <= changed, sorted(added - changed)[:5]
    assert adapters_b <= changed and not changed & base, sorted(changed & base)[:5]

    from vla.models import load_vla

    exported = load_vla(tmp_path / "export")
    assert exported.config.action_head == "l1" and not any("lora_" in name for name in exported.state_dict())
    step = tmp_path / "checkpoints" / "step0000002.ckpt"
    saved = set(torch.load(step, map_location="cpu", weights_only=True)["state_dict"])
    assert {f"vla.{name}" for name in added} <= saved and f"vla.{sorted(base)[0]}" not in saved
    resumed = LossRecorder()
    train(compose_train(tmp_path, sim_data_root, *lora, "trainer.max_steps=3", f"resume={step}"), callbacks=[resumed])
    assert sorted(resumed.losses) == [3]


@pytest.mark.parametrize("stage", ["align", "finetune", "vla-train", "vla-full-train", "vla-sandwich-train",
                                   "vla-last-layer-train", "lora", "qlora"])
def test_added_modules_train_in_every_stage_and_the_unused_output_head_does_not(chunk_vla, stage):
    from vla.training.peft import apply_lora, apply_qlora
    from vla.training.stages import apply_stage, parameter_counts

    vla = copy.deepcopy(chunk_vla) if stage in ("lora", "qlora") else chunk_vla
    if stage == "lora":
        apply_lora(vla, r=4)
    elif stage == "qlora":
        apply_qlora(vla, r=4)
    else:
        apply_stage(vla, stage)
    trainable = {name for name, p in vla.named_parameters() if p.requires_grad}
    unused = {id(p) for p in vla.vision_backbone.unused_parameters()}
    added = {name for name, p in vla.named_parameters() if id(p) not in unused} & added_parameter_names_in(
        name for name, _ in vla.named_parameters())
    assert added and added <= trainable, sorted(added - trainable)[:5]
    assert not {name for name in trainable if "lm_head" in name}  # the l1 head never reads the LLM's output layer
    counts = parameter_counts(vla)
    assert counts["action_head"][0] == counts["action_head"][1] > 0 and counts["proprio_projector"][0] > 0


def test_tokens_model_keeps_its_output_head_trainable(tiny_vla):
    from vla.training.stages import apply_stage

    vla = copy.deepcopy(tiny_vla)
    apply_stage(vla, "vla-full-train")
    assert vla.llm_backbone.llm.get_output_embeddings().weight.requires_grad


@pytest.mark.parametrize("overrides,named,allowed", [
    (("head=l1", "head.chunk_size=0"), "head.chunk_size=0", "an integer >= 1"),
    (("head=l1", "head.chunk_size=two"), "head.chunk_size='two'", "an integer >= 1"),
    (("head.chunk_size=8",), "head.chunk_size=8", "expected 1 (chunks need head=l1)"),
    (("data.image_views=[primary,top]",), "data.image_views=['primary', 'top']",
     "a non-empty list of distinct views from primary, secondary, wrist"),
    (("data.image_views=[primary,primary]",), "data.image_views=['primary', 'primary']", "distinct views"),
    (("data.image_views=[]",), "data.image_views=[]", "a non-empty list"),
    (("data.image_views=wrist",), "data.image_views='wrist'", "a non-empty list"),
    (("model.film=yes",), "model.film='yes'", "true or false"),
    (("model.film=1",), "model.film=1", "true or false"),
    (("data.proprio=maybe",), "data.proprio='maybe'", "true or false"),
    (("head.name=diffusion",), "head.name='diffusion'", "one of tokens, l1"),
    (("head=l1", "head.loss=huber"), "head.loss='huber'", "one of l1, mse"),
    (("module.lr_schedule=step-decay",), "module.lr_decay_after_steps=None",
     "an integer >= 1 with module.lr_schedule='step-decay'"),
])
def test_bad_chunk_settings_fail_before_any_work(tmp_path, overrides, named, allowed):
    with pytest.raises(ConfigError) as error:
        train(compose_train(tmp_path / "run", tmp_path / "no-data", *overrides))
    assert named in str(error.value) and allowed in str(error.value), str(error.value)


def test_regression_loss_is_for_chunk_heads(tiny_vla, chunk_vla):
    from vla.training.module import VLATrainingModule

    with pytest.raises(ValueError, match="regression_loss='mse' applies to chunk heads"):
        VLATrainingModule(copy.deepcopy(tiny_vla), regression_loss="mse")
    with pytest.raises(ValueError, match=r"Unknown regression_loss 'huber'; choose one of \('l1', 'mse'\)"):
        VLATrainingModule(copy.deepcopy(chunk_vla), regression_loss="huber")
    assert VLATrainingModule(copy.deepcopy(chunk_vla), regression_loss="mse").regression_loss == "mse"


def test_unknown_head_lists_the_heads():
    from vla.cli import require_known_choices

    with pytest.raises(SystemExit, match=r"l2 is not a head config; choose one of \['l1', 'sim-chunk', 'tokens'\]"):
        require_known_choices(["head=l2"])


def test_one_source_sets_the_model_and_the_datamodule():
    cfg = compose_cli("train", *CHUNK)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    data = OmegaConf.to_container(cfg.data.datamodule, resolve=True)
    assert {k: model[k] for k in ("action_head", "chunk_size", "image_views", "use_proprio", "film")} == {
        "action_head": "l1", "chunk_size": 8, "image_views": ["primary", "wrist"], "use_proprio": True, "film": True}
    assert {k: data[k] for k in ("chunk_size", "image_views", "proprio")} == {
        "chunk_size": 8, "image_views": ["primary", "wrist"], "proprio": True}
    tokens = compose_cli("train", "head=tokens", "model=tiny", "data.proprio=false")
    assert (tokens.model.action_head, tokens.model.chunk_size, list(tokens.model.image_views), tokens.model.use_proprio,
            tokens.model.film, tokens.data.datamodule.chunk_size) == ("tokens", 1, ["primary"], False, False, 1)
    assert tokens.run_name == "tiny-dinosiglip-224px+tiny-llama__vla_sim__vla-full-train"  # token runs keep their names


def test_embedded_default_is_the_measured_chunk_policy():
    """python train.py with no arguments: the recipe that beat its language-blind baseline in ~7 CPU minutes."""
    cfg = compose_cli("train")
    assert (cfg.head.name, cfg.head.chunk_size, cfg.head.loss, cfg.module.regression_loss) == ("l1", 4, "mse", "mse")
    assert (cfg.model.vision_backbone, cfg.model.film, list(cfg.model.image_views), cfg.model.use_proprio) == (
        "tiny-dinosiglip-112px", True, ["primary"], True)
    embedded = OmegaConf.to_container(cfg.data.embedded, resolve=True)
    assert {k: embedded[k] for k in ("suite", "n_objects", "episodes", "noise_std", "paired")} == {
        "suite": "sim_reach", "n_objects": 3, "episodes": 900, "noise_std": 0.0, "paired": True}
    assert (cfg.data.datamodule.batch_size, cfg.trainer.max_steps, cfg.module.learning_rate) == (32, 3000, 1e-3)
    assert compose_cli("eval", "checkpoint=x").env.default_suite == "sim_reach"  # eval env=sim scores that task
    # the sim preset refuses other data, so OpenVLA runs that forget head=tokens fail at start-up
    with pytest.raises(ConfigError, match="head.only_for_data='vla_sim'.*not 'bridge'; choose head=tokens"):
        train(compose_cli("train", "model=dinosiglip", "data=bridge", "stage=vla-train"))


def test_sim_reach_chunk_is_the_measured_recipe():
    cfg = compose_cli("train", "experiment=sim-reach-chunk")
    assert (cfg.head.name, cfg.head.chunk_size, cfg.head.loss, cfg.module.regression_loss) == ("l1", 4, "mse", "mse")
    assert cfg.run_name == "tiny-dinosiglip-112px+tiny-llama__vla_sim__vla-full-train__mse-k4"
    embedded = OmegaConf.to_container(cfg.data.embedded, resolve=True)
    assert {k: embedded[k] for k in ("suite", "n_objects", "episodes", "noise_std", "paired")} == {
        "suite": "sim_reach", "n_objects": 3, "episodes": 1200, "noise_std": 0.0, "paired": True}
    assert list(cfg.model.image_views) == ["primary", "wrist"] and cfg.model.use_proprio and cfg.model.film
    assert (cfg.data.datamodule.batch_size, cfg.trainer.max_steps, cfg.module.learning_rate) == (32, 3000, 1e-3)
    assert compose_cli("train", "head=l1").module.regression_loss == "l1"  # OFT's loss stays the l1 head's default


def test_oft_libero_is_openvla_oft_finetune_py():
    cfg = compose_cli("train", "experiment=oft-libero")
    assert (cfg.head.name, cfg.head.chunk_size) == ("l1", 8)
    assert list(cfg.data.image_views) == ["primary", "wrist"] and cfg.data.proprio is True and cfg.model.film is False
    assert cfg.data.name == "libero_spatial" and cfg.model._target_ == "vla.models.load_openvla"  # from OpenVLA-7B
    assert cfg.stage.name == "lora" and OmegaConf.to_container(cfg.module.lora, resolve=True) == {
        "r": 32, "alpha": None, "dropout": 0.0, "target_modules": "all-linear", "adapt_vision_and_projector": True}
    assert cfg.module.learning_rate == 5e-4 and cfg.module.weight_decay == 0.01 and cfg.module.warmup_ratio == 0.0
    assert (cfg.module.lr_schedule, cfg.module.lr_decay_after_steps, cfg.module.lr_decay_factor) == ("step-decay", 100_000, 0.1)
    assert cfg.data.datamodule.batch_size == 8 and cfg.trainer.devices == 8 and cfg.trainer.accumulate_grad_batches == 1
    assert cfg.data.datamodule.image_aug is True and cfg.data.datamodule.shuffle_buffer == 100_000
    assert cfg.trainer.max_steps == 150_000 and cfg.checkpoint_every_n_steps == 10_000
    assert cfg.trainer.gradient_clip_val is None and cfg.strategy.name == "ddp" and cfg.trainer.precision == "bf16-mixed"
    tiny = compose_cli("train", "experiment=tiny-sim-chunk")
    assert (tiny.model.vision_backbone, tiny.head.name, tiny.head.chunk_size, list(tiny.data.image_views),
            tiny.data.proprio, tiny.model.film) == ("tiny-dinosiglip-224px", "l1", 8, ["primary", "wrist"], True, True)


def test_step_decay_drops_the_lr_tenfold_after_the_decay_step():
    from vla.training.module import step_decay_factor

    factor = step_decay_factor(150_000, 0.0, 100_000, 0.1)
    assert [factor(s) for s in (0, 99_999, 100_000, 149_999)] == [1.0, 1.0, 0.1, 0.1]
    warm = step_decay_factor(100, 0.1, 50, 0.1)
    assert warm(0) == pytest.approx(0.1) and warm(9) == 1.0 and warm(50) == pytest.approx(0.1)
