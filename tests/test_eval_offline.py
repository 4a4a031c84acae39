"""Offline eval (``python eval.py mode=offline``) scores a checkpoint exactly as training's validation did;
chunk models by L1 over real chunk steps, overall, per action dimension and per step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import REPO_ROOT
from tests.test_training import compose_train
from vla.data import VLADataModule
from vla.eval.app import run_eval
from vla.eval.offline import data_layout, evaluate_offline
from vla.models import build_vla
from vla.training.run import train

VAL_BATCHES = 2


def _compose_eval(sim_data_root, out_dir, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("eval", return_hydra_config=True, overrides=[
            "mode=offline", "data=sim", f"data.datamodule.data_root={sim_data_root}", "data.datamodule.batch_size=4",
            "data.datamodule.num_workers=0", "progress=false", f"out_dir={out_dir}", *overrides])
    OmegaConf.resolve(cfg)
    return cfg


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, sim_data_root):
    """A 4-step run validated on the first VAL_BATCHES val batches at its end; returns (run dir, metrics)."""
    run_dir = tmp_path_factory.mktemp("offline_run")
    metrics = train(compose_train(run_dir, sim_data_root, "trainer.max_steps=4", "trainer.val_check_interval=4",
                                  f"trainer.limit_val_batches={VAL_BATCHES}", "checkpoint_every_n_steps=4",
                                  "module.learning_rate=3e-3"))
    return run_dir, metrics


def test_offline_metrics_equal_what_training_logged(tmp_path, sim_data_root, trained_run):
    run_dir, logged = trained_run
    cfg = _compose_eval(sim_data_root, tmp_path, f"checkpoint={run_dir / 'checkpoints' / 'last.ckpt'}",
                        f"limit_batches={VAL_BATCHES}")
    results = run_eval(cfg)
    for name in ("loss", "action_accuracy", "l1"):
        assert results["metrics"][name] == pytest.approx(logged[f"val/{name}"], rel=1e-5, abs=1e-6), name
    written = json.loads((tmp_path / "offline_metrics.json").read_text())
    assert written["metrics"] == results["metrics"] and written["settings"]["split"] == "val"


def test_offline_split_and_batch_limit_choose_what_is_scored(tmp_path, sim_data_root, trained_run):
    run_dir, logged = trained_run
    checkpoint = f"checkpoint={run_dir / 'export'}"
    more_val = run_eval(_compose_eval(sim_data_root, tmp_path / "val", checkpoint,
                                      f"limit_batches={2 * VAL_BATCHES}"))["metrics"]
    train_split = run_eval(_compose_eval(sim_data_root, tmp_path / "train", checkpoint, "split=train",
                                         f"limit_batches={VAL_BATCHES}"))["metrics"]
    assert more_val["loss"] != pytest.approx(logged["val/loss"])  # more batches than training looked at
    assert train_split["loss"] != pytest.approx(logged["val/loss"])
    assert all(0.0 <= m["action_accuracy"] <= 1.0 for m in (more_val, train_split))


def test_offline_rejects_bad_split_mode_and_batch_limit(tmp_path, sim_data_root, trained_run):
    checkpoint = f"checkpoint={trained_run[0] / 'export'}"
    with pytest.raises(ValueError, match="no split 'test'"):
        run_eval(_compose_eval(sim_data_root, tmp_path, checkpoint, "split=test"))
    with pytest.raises(ValueError, match="limit_batches must be >= 1"):
        run_eval(_compose_eval(sim_data_root, tmp_path, checkpoint, "limit_batches=0"))
    with pytest.raises(ValueError, match="Unknown eval mode 'online'"):
        run_eval(_compose_eval(sim_data_root, tmp_path, checkpoint, "mode=online"))


CHUNK_LAYOUT = {"chunk_size": 4, "image_views": ("primary", "wrist"), "proprio": True}


@pytest.fixture(scope="module")
def chunk_model(sim_data_root):
    """A tiny random l1 model (K=4, primary + wrist views, proprio) sized from the sim data's statistics."""
    torch.manual_seed(0)
    stats = VLADataModule(sim_data_root, num_workers=0, **CHUNK_LAYOUT).dataset_statistics
    return build_vla("tiny-dinosiglip-224px", "tiny-llama", norm_stats=stats, action_head="l1", chunk_size=4,
                     image_views=("primary", "wrist"), use_proprio=True).eval()


class TwoDatasets(VLADataModule):
    """Val batches whose rows alternate between two dataset names, as a mixture's do (per-dataset scores)."""

    def val_dataloader(self):
        for batch in super().val_dataloader():
            yield {**batch, "dataset_name": [("other", name)[i % 2] for i, name in enumerate(batch["dataset_name"])]}


def test_offline_scores_chunk_models_over_real_steps(sim_data_root, chunk_model):
    assert data_layout(chunk_model) == CHUNK_LAYOUT
    make = lambda: TwoDatasets(sim_data_root, batch_size=8, num_workers=0, **data_layout(chunk_model))
    metrics = evaluate_offline(chunk_model, make())  # the whole val split: some chunks run past their episode's end

    datamodule = make()
    datamodule.attach_processor(chunk_model.processor)
    datamodule.setup("validate")
    errors, real, names = [], [], []
    with torch.inference_mode():
        for batch in datamodule.val_dataloader():
            assert batch["pixel_values"].shape[1:3] == (2, 3) and batch["proprio"].ndim == 2
            out = chunk_model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], proprio=batch["proprio"],
                              action_mask=batch["action_mask"])
            errors.append((out.predicted - batch["actions"]).abs().numpy())
            real.append(~batch["action_pad_mask"].numpy())
            names += batch["dataset_name"]
    error, real, names = np.concatenate(errors).astype(np.float64), np.concatenate(real), np.array(names)
    assert real[:, 0].all() and not real.all()
    dims = error.shape[2]
    breakdown = ["l1", *(f"l1/dim{i}" for i in range(dims)), *(f"l1/t{k}" for k in range(4))]
    assert set(metrics) == {"loss", *breakdown, *(f"{name}/{key}" for name in ("other", "vla_sim") for key in breakdown)}
    assert metrics["loss"] == pytest.approx(error.mean(), rel=1e-5)  # the training loss counts padded steps too
    for prefix, rows in (("", slice(None)), ("other/", names == "other"), ("vla_sim/", names == "vla_sim")):
        e, r = error[rows], real[rows]
        assert metrics[f"{prefix}l1"] == pytest.approx(e[r].mean(), rel=1e-5), prefix
        for i in range(dims):
            assert metrics[f"{prefix}l1/dim{i}"] == pytest.approx(e[r][:, i].mean(), rel=1e-5, abs=1e-7), (prefix, i)
        for k in range(4):
            assert metrics[f"{prefix}l1/t{k}"] == pytest.approx(e[:, k][r[:, k]].mean(), rel=1e-5), (prefix, k)


def test_offline_refuses_data_that_is_not_what_the_model_reads(sim_data_root, chunk_model):
    with pytest.raises(ValueError, match="the checkpoint's model reads"):
        evaluate_offline(chunk_model, VLADataModule(sim_data_root, num_workers=0, chunk_size=4))


def test_offline_chunk_metrics_equal_what_training_logged(tmp_path, sim_data_root):
    from vla.models import load_checkpoint

    logged = train(compose_train(tmp_path, sim_data_root, "head=l1", "head.chunk_size=4", "data.image_views=[primary,wrist]",
                                 "data.proprio=true", "trainer.max_steps=2", "trainer.val_check_interval=2",
                                 f"trainer.limit_val_batches={VAL_BATCHES}", "checkpoint_every_n_steps=2", "export=false"))
    model = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    datamodule = VLADataModule(sim_data_root, batch_size=4, num_workers=0, **data_layout(model))
    metrics = evaluate_offline(model, datamodule, limit_batches=VAL_BATCHES)
    assert {name for name in logged if name.startswith("val/")} == {f"val/{name}" for name in metrics}
    for name, value in metrics.items():
        assert value == pytest.approx(logged[f"val/{name}"], rel=1e-5, abs=1e-6), name
