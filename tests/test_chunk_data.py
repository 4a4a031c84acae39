"""Action-chunk data (docs/action-chunks.md): the processor's ``l1`` layout, views and proprio."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vla.contract.processor import VLAProcessor
from vla.contract.prompt import IGNORE_INDEX
import vla.data.datamodule as datamodule
from vla.data import VLADataModule
from vla.data.shards import encode_sample, iter_shard, load_prepared, sample_key, write_shard

K, D = 4, 7


@pytest.fixture(scope="module")
def tokens(tiny_vla) -> VLAProcessor:
    return tiny_vla.processor


@pytest.fixture(scope="module")
def l1(tokens) -> VLAProcessor:
    return dataclasses.replace(tokens, action_head="l1", chunk_size=K, action_dim=D)


def _image(seed: int, size: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_tokens_head_single_image_is_todays_layout(tokens):
    action = np.linspace(-0.9, 0.9, D)
    sample = tokens.training_sample(_image(0), "Pick up the block", action)
    input_ids, labels = tokens.prompt_tokenizer.training_example(
        "Pick up the block", tokens.action_tokenizer.encode(action), tokens.predict_stop_token)
    assert set(sample) == {"pixel_values", "input_ids", "labels"}
    assert torch.equal(sample["pixel_values"], tokens.image_transform(_image(0)))
    assert torch.equal(sample["input_ids"], input_ids) and torch.equal(sample["labels"], labels)
    batch = tokens.collate([sample, sample])
    assert set(batch) == {"pixel_values", "input_ids", "labels", "attention_mask"}
    one = tokens.training_sample(_image(0), "Pick up the block", action[None])
    assert torch.equal(one["input_ids"], input_ids)


def test_tokens_head_rejects_a_chunk(tokens):
    with pytest.raises(ValueError, match=r"'tokens' takes one action \[D\].*\(3, 7\)"):
        tokens.training_sample(_image(0), "go", np.zeros((3, D)))
    with pytest.raises(ValueError, match="action_pad_mask"):
        tokens.training_sample(_image(0), "go", np.zeros(D), action_pad_mask=np.zeros(1, bool))


def test_processor_checks_its_head_settings(tokens):
    with pytest.raises(ValueError, match="Unknown action_head 'mse'"):
        dataclasses.replace(tokens, action_head="mse")
    with pytest.raises(ValueError, match="chunk_size 1"):
        dataclasses.replace(tokens, chunk_size=4)
    with pytest.raises(ValueError, match="needs action_dim"):
        dataclasses.replace(tokens, action_head="l1", chunk_size=4)
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        dataclasses.replace(tokens, action_head="l1", chunk_size=0, action_dim=D)


def test_l1_training_sample_layout(l1, tokens):
    chunk = np.random.default_rng(0).uniform(-1, 1, (K, D))
    pad = np.array([False, False, True, True])
    proprio = np.arange(8, dtype=np.float64) / 10
    views = [_image(0), _image(1, size=64)]
    sample = l1.training_sample(views, "Pick up the block", chunk, proprio=proprio, action_pad_mask=pad)
    prompt = tokens.prompt_tokenizer.prompt_ids("Pick up the block")
    assert sample["pixel_values"].shape == (2, 3, 224, 224) and sample["pixel_values"].dtype == torch.uint8
    assert torch.equal(sample["pixel_values"][1], tokens.image_transform(views[1]))
    stop = l1.prompt_tokenizer.eos_token_id  # OpenVLA-OFT's sequences end with the stop token
    assert sample["input_ids"].tolist() == prompt + [l1.pad_token_id] * (K * D) + [stop]
    assert (sample["labels"] == IGNORE_INDEX).all()
    assert sample["action_mask"].dtype == torch.bool
    assert sample["action_mask"].tolist() == [False] * len(prompt) + [True] * (K * D) + [False]
    assert sample["actions"].dtype == torch.float32 and torch.equal(sample["actions"], torch.tensor(chunk, dtype=torch.float32))
    assert sample["action_pad_mask"].tolist() == pad.tolist()
    assert sample["proprio"].dtype == torch.float32 and torch.equal(sample["proprio"], torch.tensor(proprio, dtype=torch.float32))
    plain = l1.training_sample(_image(0), "go", chunk)
    assert plain["pixel_values"].shape == (3, 224, 224) and not plain["action_pad_mask"].any() and "proprio" not in plain


def test_l1_rejects_wrong_chunks_and_proprio(l1):
    with pytest.raises(ValueError, match=r"\[K, D\] = \[4, 7\], got \[7\]"):
        l1.training_sample(_image(0), "go", np.zeros(D))
    with pytest.raises(ValueError, match=r"got \[2, 7\]"):
        l1.training_sample(_image(0), "go", np.zeros((2, D)))
    with pytest.raises(ValueError, match="NaN"):
        l1.training_sample(_image(0), "go", np.full((K, D), np.nan))
    with pytest.raises(ValueError, match="action_pad_mask must be bool"):
        l1.training_sample(_image(0), "go", np.zeros((K, D)), action_pad_mask=np.zeros(K))
    with pytest.raises(ValueError, match="proprio contains NaN"):
        l1.training_sample(_image(0), "go", np.zeros((K, D)), proprio=np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match=r"1-D vector \[P\]"):
        l1.training_sample(_image(0), "go", np.zeros((K, D)), proprio=np.zeros((2, 2)))


def test_l1_collate_pads_masks_and_stacks_targets(l1):
    short = l1.training_sample([_image(0)], "go", np.zeros((K, D)), proprio=np.zeros(8))
    long = l1.training_sample([_image(1)], "pick up the red block on the left", np.ones((K, D)), proprio=np.ones(8),
                              action_pad_mask=np.array([False, False, False, True]))
    batch = l1.collate([{**short, "sample_key": "a"}, {**long, "sample_key": "b"}])
    length = long["input_ids"].shape[0]
    assert batch["pixel_values"].shape == (2, 1, 3, 224, 224)
    assert batch["action_mask"].shape == (2, length) and batch["action_mask"].dtype == torch.bool
    assert batch["action_mask"].sum(1).tolist() == [K * D, K * D]
    assert not batch["action_mask"][0, short["input_ids"].shape[0]:].any()
    assert batch["actions"].shape == (2, K, D) and batch["action_pad_mask"].tolist() == [[False] * 4, [False, False, False, True]]
    assert batch["proprio"].shape == (2, 8) and batch["sample_key"] == ["a", "b"]
    # the placeholders sit just before the stop token, where the attention mask ends
    for row in range(2):
        n = int(batch["attention_mask"][row].sum())
        assert batch["action_mask"][row, n - 1 - K * D:n - 1].all()
        assert batch["input_ids"][row, n - 1] == l1.prompt_tokenizer.eos_token_id


def test_inference_batch_views_placeholders_and_proprio(l1, tokens):
    plain = tokens.inference_batch([_image(0), _image(1)], ["go", "pick up the block"])
    assert set(plain) == {"pixel_values", "input_ids", "attention_mask"} and plain["pixel_values"].shape == (2, 3, 224, 224)
    batch = l1.inference_batch([[_image(0), _image(2)], [_image(1), _image(3)]], ["go", "pick up the block"],
                               proprio=[np.zeros(8), np.ones(8)])
    assert batch["pixel_values"].shape == (2, 2, 3, 224, 224) and batch["proprio"].dtype == torch.float32
    for row, text in enumerate(["go", "pick up the block"]):
        prompt = tokens.prompt_tokenizer.prompt_ids(text)
        n = int(batch["attention_mask"][row].sum())
        stop = l1.prompt_tokenizer.eos_token_id
        assert batch["input_ids"][row, :n].tolist() == prompt + [l1.pad_token_id] * (K * D) + [stop]
        assert batch["action_mask"][row].tolist()[:n] == [False] * len(prompt) + [True] * (K * D) + [False]
        assert not batch["action_mask"][row, n:].any()
    with pytest.raises(ValueError, match="2 images but 1 proprio"):
        l1.inference_batch([_image(0), _image(1)], ["a", "b"], proprio=[np.zeros(8)])


# --- the DataModule's chunked stream ------------------------------------------------------------

LENGTHS = {"train": [5, 3, 6, 2, 4], "val": [5, 3]}  # mean train length 4: K = 4 is the largest allowed


def _jpeg(rng: np.random.Generator) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def _stats(dim: int, zero: bool = False) -> dict:
    one = 0.0 if zero else 1.0
    return {"mean": [0.0] * dim, "std": [one] * dim, "min": [-one] * dim, "max": [one] * dim,
            "q01": [-one] * dim, "q99": [one] * dim, "mask": [True] * (dim - 1) + [False]}


def chunk_action(episode: int, t: int) -> np.ndarray:
    """The action at (episode, t): readable from a batch, inside [-1, 1]."""
    return np.array([episode / 100, t / 100, 0.5, -0.5, 0.25, -0.25, 1.0], dtype=np.float32)


def write_views_dataset(root: Path, name: str = "vla_sim", shards: int = 3, proprio_dim: int = 8,
                        lengths: dict[str, list[int]] = LENGTHS, views: tuple[str, ...] = ("primary", "wrist")) -> Path:
    """A prepared set with ``views``, proprio (all-zero statistics when ``proprio_dim`` is 0) and
    episodes of the given lengths, cut into ``shards`` shards regardless of episode boundaries."""
    out = root / name
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    p = proprio_dim or D
    stats = {name: {"action": _stats(D), "proprio": _stats(p, zero=proprio_dim == 0),
                    "num_transitions": sum(map(sum, lengths.values())), "num_trajectories": sum(map(len, lengths.values()))}}
    stats_bytes = json.dumps(stats).encode()
    (out / "dataset_statistics.json").write_bytes(stats_bytes)
    splits = {}
    for split, episode_lengths in lengths.items():
        keys = [(e, t) for e, n in enumerate(episode_lengths) for t in range(n)]
        entries = []
        for index, part in enumerate(np.array_split(np.arange(len(keys)), shards if split == "train" else 1)):
            samples = []
            for i in part:
                e, t = keys[i]
                state = np.full(p, (e * 10 + t) / 100 if proprio_dim else 0.0, dtype=np.float32)
                samples.append(encode_sample(sample_key(e, t), chunk_action(e, t), state,
                                             {view: _jpeg(rng) for view in views}, f"pick up block {e}",
                                             {"dataset": name, "split": split, "episode_index": e, "timestep": t}))
            entries.append(write_shard(out / f"{split}-{index:06d}.tar", samples))
        splits[split] = {"num_episodes": len(episode_lengths), "num_transitions": len(keys), "shards": entries}
    manifest = {"format_version": 1, "dataset": name, "normalization": "bounds_q99", "image_views": list(views),
                "statistics_sha256": hashlib.sha256(stats_bytes).hexdigest(), "splits": splits, "complete": True}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def views_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chunks")
    write_views_dataset(root)
    return root


def chunk_dm(root: Path, processor: VLAProcessor, **overrides) -> VLADataModule:
    kwargs = dict(mixture="vla_sim", batch_size=4, num_workers=0, shuffle_buffer=0, seed=3, processor=processor,
                  chunk_size=K, image_views=["primary", "wrist"], proprio=True)
    return VLADataModule(root, **{**kwargs, **overrides})


def batch_keys(batches: list[dict]) -> list[str]:
    return [key for batch in batches for key in batch["sample_key"]]


def expected_chunk(key: str, lengths: list[int]) -> tuple[np.ndarray, list[bool]]:
    episode, t = (int(part) for part in key.split("_"))
    steps = [min(t + i, lengths[episode] - 1) for i in range(K)]
    return np.stack([chunk_action(episode, s) for s in steps]), [t + i >= lengths[episode] for i in range(K)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_samples_carry_their_episodes_next_actions(views_root, l1, num_workers):
    """Pieces (2 workers) and shards (3) cut episodes; chunks still come from the whole episode."""
    batches = list(chunk_dm(views_root, l1, num_workers=num_workers).train_dataloader())
    seen = batch_keys(batches)
    every = {sample_key(e, t) for e, n in enumerate(LENGTHS["train"]) for t in range(n)}
    assert len(seen) == 20 and set(seen) <= every and (num_workers or set(seen) == every)
    actions = torch.cat([b["actions"] for b in batches]).numpy()
    pads = torch.cat([b["action_pad_mask"] for b in batches]).tolist()
    for key, got, pad in zip(seen, actions, pads):
        want, want_pad = expected_chunk(key, LENGTHS["train"])
        np.testing.assert_array_equal(got, want, err_msg=key)
        assert pad == want_pad, key
    batch = batches[0]
    assert batch["pixel_values"].shape == (4, 2, 3, 224, 224) and batch["proprio"].shape == (4, 8)
    episode, t = (int(x) for x in batch["sample_key"][0].split("_"))
    assert batch["proprio"][0].tolist() == pytest.approx([(episode * 10 + t) / 100] * 8)


def test_val_stream_chunks_too(views_root, l1):
    batches = list(chunk_dm(views_root, l1, num_workers=2).val_dataloader())
    for key, got in zip(batch_keys(batches), torch.cat([b["actions"] for b in batches]).numpy()):
        np.testing.assert_array_equal(got, expected_chunk(key, LENGTHS["val"])[0])


def test_chunking_keeps_the_sample_stream(views_root, l1, tokens):
    """Same samples in the same order as K = 1 (shuffled, mixed workers): chunks only add fields."""
    settings = dict(shuffle_buffer=5, num_workers=2, samples_per_epoch=40)
    chunked = batch_keys(chunk_dm(views_root, l1, **settings).train_dataloader())
    single = batch_keys(chunk_dm(views_root, tokens, chunk_size=1, image_views=["primary"], proprio=False,
                                 **settings).train_dataloader())
    assert chunked == single and len(chunked) == 40


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_with_chunks_views_and_proprio_is_exact(views_root, l1, num_workers):
    settings = dict(shuffle_buffer=5, image_aug=True, num_workers=num_workers, samples_per_epoch=36)
    reference = list(chunk_dm(views_root, l1, **settings).train_dataloader())
    assert len(reference) == 9
    interrupted = chunk_dm(views_root, l1, **settings)
    iterator = iter(interrupted.train_dataloader())
    for _ in range(4):
        next(iterator)
    state = interrupted.state_dict()
    resumed = chunk_dm(views_root, l1, **settings)
    resumed.load_state_dict(state)
    rest = list(resumed.train_dataloader())
    assert batch_keys(rest) == batch_keys(reference[4:])
    for got, want in zip(rest, reference[4:]):
        for key in ("pixel_values", "input_ids", "action_mask", "actions", "action_pad_mask", "proprio"):
            assert torch.equal(got[key], want[key]), key


def test_each_view_gets_its_own_augmentation(tmp_path, l1):
    """Both views hold the same JPEG: augmented, they differ (own crop/jitter draws); unaugmented, they match."""
    write_views_dataset(tmp_path, lengths={"train": [4, 4]}, shards=1)
    for shard in (tmp_path / "vla_sim").glob("*.tar"):
        samples = [{**s, "image_wrist.jpg": s["image_primary.jpg"]} for s in iter_shard(shard)]
        entry = write_shard(shard, samples)
        manifest = json.loads((tmp_path / "vla_sim" / "manifest.json").read_text())
        manifest["splits"]["train"]["shards"][0] = entry
        (tmp_path / "vla_sim" / "manifest.json").write_text(json.dumps(manifest))
    plain = next(iter(chunk_dm(tmp_path, l1, val_split=None).train_dataloader()))["pixel_values"]
    augmented = next(iter(chunk_dm(tmp_path, l1, val_split=None, image_aug=True).train_dataloader()))["pixel_values"]
    assert torch.equal(plain[:, 0], plain[:, 1])
    assert not torch.equal(augmented[:, 0], augmented[:, 1])


# --- errors at setup, naming the value and what is allowed ---------------------------------------


def test_bad_chunk_size_or_views_fail_in_the_constructor(views_root):
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got 0"):
        VLADataModule(views_root, chunk_size=0)
    with pytest.raises(ValueError, match="distinct view names"):
        VLADataModule(views_root, image_views=["primary", "primary"])


def test_chunk_longer_than_the_episodes_allow_is_refused(views_root):
    with pytest.raises(ValueError, match=r"chunk_size=5 is larger than dataset 'vla_sim' allows.*average 4 steps.*1\.\.4"):
        VLADataModule(views_root, chunk_size=5).setup()


def test_missing_view_lists_the_views_the_shards_have(views_root):
    with pytest.raises(ValueError, match=r"no view\(s\) \['secondary'\].*lists \['primary', 'wrist'\]"):
        VLADataModule(views_root, image_views=["primary", "secondary"]).dataset_statistics


def test_proprio_from_a_dataset_without_it_is_refused(tmp_path):
    write_views_dataset(tmp_path, proprio_dim=0)
    VLADataModule(tmp_path).setup()  # fine without proprio
    with pytest.raises(ValueError, match=r"proprio=True, but dataset\(s\) \['vla_sim'\] have no proprio"):
        VLADataModule(tmp_path, proprio=True).setup()


def test_processor_must_match_the_chunk_size(views_root, tokens, l1):
    with pytest.raises(ValueError, match="chunk_size=4 needs an action-chunk model"):
        chunk_dm(views_root, tokens).train_dataloader()
    with pytest.raises(ValueError, match="chunk_size=2, but the model's processor has chunk_size=4"):
        chunk_dm(views_root, l1, chunk_size=2).train_dataloader()


def test_lookahead_into_the_next_shard_hashes_it_first(views_root, monkeypatch):
    """Episode 1 spans shards 0 and 1: shard 0's last chunks read shard 1, verified first; shard 1's
    last episode ends with it, so shard 2 is only peeked at (its first key), never trusted or hashed."""
    hashed: list[str] = []
    monkeypatch.setattr(datamodule, "verify_shard", lambda path, sha256: hashed.append(Path(path).name))
    shards = datamodule.split_shards(load_prepared(views_root / "vla_sim"), "train")
    layout = datamodule._Layout(chunk_size=K)
    for index, expected in ((0, ["train-000000.tar", "train-000001.tar"]), (1, ["train-000001.tar"])):
        hashed.clear()
        piece = datamodule._Piece(shards[index], 0, shards[index].num_samples, index)
        raw = list(datamodule._read_pieces([piece], shards, "vla_sim", datamodule._FirstReadCheck(), layout))
        assert hashed == expected and len(raw) == shards[index].num_samples
    last = raw[-1]  # episode 2's last step: a one-action chunk
    assert last["__key__"] == sample_key(2, 5) and len(last[datamodule.ACTION_CHUNK]) == 1


def test_sim_demos_give_wrist_views_and_state(sim_data_root, tokens):
    """The built-in sim data (data_prep output): primary + wrist views, proprio from the EEF + gripper state."""
    l1_sim = dataclasses.replace(tokens, action_head="l1", chunk_size=K, action_dim=D)
    dm = VLADataModule(sim_data_root, batch_size=2, num_workers=0, shuffle_buffer=0, samples_per_epoch=4,
                       processor=l1_sim, chunk_size=K, image_views=["primary", "wrist"], proprio=True)
    batch = next(iter(dm.train_dataloader()))
    proprio_dim = dm._ready()[0].proprio_dim()
    assert proprio_dim == 8  # EEF xyz + rpy, OpenVLA's pad column, gripper
    assert batch["pixel_values"].shape == (2, 2, 3, 224, 224) and batch["proprio"].shape == (2, proprio_dim)
    assert batch["actions"].shape == (2, K, D) and not batch["action_pad_mask"].any()
    assert not torch.equal(batch["pixel_values"][:, 0], batch["pixel_values"][:, 1])
