"""Streaming mixture DataModule over prepared WebDataset shard sets (one directory per dataset).

Training stream: each (rank, DataLoader worker) reads its own share of every dataset's shards,
shuffles raw (undecoded) samples in a buffer, interleaves the datasets by mixture weight, and only
then decodes, resizes, augments and tokenizes. The stream is a pure function of
(seed, epoch, rank, worker), so a resumed run fast-forwards by re-reading raw samples without
decoding them, and continues with exactly the batches an uninterrupted run would have produced.

Batches of one epoch are dealt round-robin to the workers (batch ``j`` comes from worker
``j % num_workers``, as PyTorch's DataLoader orders them); on resume after ``B`` batches the
worker roles are rotated by ``B`` so the first new batch comes from the right worker.
The shard format (member names, tar reading, member decoding, manifest checks) is :mod:`vla.data.shards`.

Action chunks, extra camera views and proprio (docs/action-chunks.md) only add fields to the same
samples: each raw sample also collects the action bytes of its episode's next K-1 steps as the
shards are read (:func:`_with_action_chunks`), so the stream and its resume stay as above.

Integrity: shards are checked against the sha256 that ``manifest.json`` records (``verify_shards``,
see :class:`VLADataModule`), and every decoded sample is validated (action length, finite, inside
[-1, 1] where normalization bounds it); any failure raises :class:`CorruptShardError` naming the
shard, and the sample key when one sample is at fault.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from vla.data.augmentation import AUGMENT_PARAMS_KEY, OpenVLAAugmentation, augment_pixel_values
from vla.data.locations import Location, UrlPath, as_location
from vla.data.mixtures import resolve_mixture
from vla.data.registry import DATASET_CONFIGS
from vla.contract.images import lanczos_resize
from vla.contract.normalization import with_normalization_kind
from vla.contract.processor import VLAProcessor
from vla.data.shards import (
    ACTION_MEMBER,
    INSTRUCTION_MEMBER,
    MANIFEST_FILE,
    PROPRIO_MEMBER,
    CorruptShardError,
    PreparedDataset,
    check_normalized_action,
    image_member,
    iter_shard,
    load_prepared,
    read_array,
    read_image,
    read_text,
    verify_shard,
)

PRIMARY_IMAGE = image_member("primary")
_REQUIRED_MEMBERS = (ACTION_MEMBER, INSTRUCTION_MEMBER, PRIMARY_IMAGE)
# Raw-sample field of chunked streams: ``action.npy`` bytes of steps t, t+1, ... of the sample's own
# episode, K of them, fewer where the episode ends first (the decoder repeats the last one).
ACTION_CHUNK = "action_chunk"

# Dataset choices of the mixture drawn per call (a single numpy choice costs ~9 us; a block of them, little more).
_PICK_BLOCK = 1024
RawSample = dict[str, Any]  # member bytes by field name + "__key__", "__shard__", "dataset_name"
VerifyShards = Literal["first_read", "setup", "off"]
AugmentOn = Literal["worker", "device"]
OnCorruptShard = Literal["error", "skip"]


@dataclass(frozen=True)
class Shard:
    path: Location  # a local path or a URL (vla.data.locations)
    num_samples: int
    sha256: str | None = None  # the manifest's hash; None: not known, never verified


@dataclass(frozen=True)
class SkippedShard:
    """A shard left out by ``on_corrupt_shard="skip"``, and why."""

    dataset: str
    split: str
    file: str
    num_samples: int
    reason: str


def load_dataset(root: str | Path | UrlPath, name: str) -> PreparedDataset:
    """Load and check one prepared directory (manifest, statistics hash, shard files) for ``name``; a URL is read through fsspec."""
    prepared = load_prepared(root)
    if prepared.dataset != name:
        raise ValueError(f"{prepared.root / MANIFEST_FILE} describes dataset {prepared.dataset!r}, expected {name!r}")
    if "primary" not in prepared.image_views:
        raise ValueError(f"{prepared.root / MANIFEST_FILE} has no primary image view (has {list(prepared.image_views)})")
    return prepared


def split_shards(prepared: PreparedDataset, split: str) -> list[Shard]:
    if split not in prepared.splits:
        raise ValueError(f"{prepared.root / MANIFEST_FILE} has no split {split!r} (has {sorted(prepared.splits)})")
    return [Shard(prepared.root / entry["file"], int(entry["num_samples"]), entry["sha256"])
            for entry in prepared.splits[split]["shards"]]


def num_transitions(prepared: PreparedDataset, split: str) -> int:
    return sum(shard.num_samples for shard in split_shards(prepared, split))


def iter_raw_samples(shard: Shard, dataset_name: str, members: Sequence[str] = _REQUIRED_MEMBERS) -> Iterator[RawSample]:
    """Undecoded samples of one shard (``members`` kept); corrupt, short or incomplete shards raise :class:`CorruptShardError`."""
    count = 0
    for sample in iter_shard(shard.path):
        key = sample["__key__"].decode()
        missing = [field for field in members if field not in sample]
        if missing:
            raise CorruptShardError(f"sample {key!r} in shard {shard.path} lacks members {missing}")
        yield {"__key__": key, "__shard__": str(shard.path), "dataset_name": dataset_name,
               **{field: sample[field] for field in members}}
        count += 1
    if count != shard.num_samples:
        raise CorruptShardError(f"shard {shard.path} holds {count} samples, its manifest says {shard.num_samples} (truncated?)")


@dataclass
class _FirstReadCheck:
    """Hashes a shard's whole file against the manifest the first time this process opens it.

    A worker reads only a slice of a shard, and its samples reach the model before the slice ends,
    so the whole file is hashed up front, before any of its samples is trusted. The verified paths
    live in this object, which DataLoader copies into each worker: every process hashes each shard
    it opens once (non-persistent workers: once per worker per epoch; the page cache then serves
    the tar read). A shard in a bucket has no page cache: it is downloaded twice, once to hash and
    once to stream its samples (docs/clusters.md, "Shards in a bucket").
    """

    verified: set[Location] = field(default_factory=set)

    def __call__(self, shard: Shard) -> None:
        if shard.sha256 is None or shard.path in self.verified:
            return
        verify_shard(shard.path, shard.sha256)
        self.verified.add(shard.path)


@dataclass(frozen=True)
class _Layout:
    """What the raw samples of a stream carry: these members and, for K > 1, :data:`ACTION_CHUNK`."""

    members: tuple[str, ...] = _REQUIRED_MEMBERS
    chunk_size: int = 1
    # Members read only for some datasets: the partner view of a view they swap (DROID's exterior cameras)
    extra_members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def members_of(self, dataset_name: str) -> tuple[str, ...]:
        return self.members + self.extra_members.get(dataset_name, ())


@dataclass(frozen=True)
class _Piece:
    """Samples ``start:stop`` of one shard, the ``index``-th of its split."""

    shard: Shard
    start: int
    stop: int
    index: int


def _worker_pieces(shards: list[Shard], worker: int, num_workers: int) -> list[_Piece]:
    """A contiguous, near-equal slice of the split's samples, so each worker reads ~1/n of the bytes."""
    total = sum(shard.num_samples for shard in shards)
    low, high = worker * total // num_workers, (worker + 1) * total // num_workers
    pieces, offset = [], 0
    for index, shard in enumerate(shards):
        start, stop = max(low, offset), min(high, offset + shard.num_samples)
        if start < stop:
            pieces.append(_Piece(shard, start - offset, stop - offset, index))
        offset += shard.num_samples
    return pieces


def _read_pieces(pieces: list[_Piece], shards: list[Shard], dataset_name: str, check: _FirstReadCheck | None,
                 layout: _Layout) -> Iterator[RawSample]:
    """The pieces' samples; with K > 1 each also carries its action chunk (see :func:`_with_action_chunks`)."""
    for piece in pieces:
        if check is not None:
            check(piece.shard)
        samples = iter_raw_samples(piece.shard, dataset_name, layout.members_of(dataset_name))
        if layout.chunk_size == 1:
            yield from itertools.islice(samples, piece.start, piece.stop)
        else:
            yield from _with_action_chunks(samples, piece, shards, dataset_name, check, layout)


def _episode(raw: RawSample) -> str:
    """The episode part of a ``<episode>_<timestep>`` sample key (:func:`vla.data.shards.sample_key`)."""
    episode, separator, _ = raw["__key__"].rpartition("_")
    if not separator:
        raise CorruptShardError(f"sample key {raw['__key__']!r} in shard {raw['__shard__']} is not <episode>_<timestep>")
    return episode


def _with_action_chunks(samples: Iterator[RawSample], piece: _Piece, shards: list[Shard], dataset_name: str,
                        check: _FirstReadCheck | None, layout: _Layout) -> Iterator[RawSample]:
    """The piece's samples, in order, each with the action bytes of steps t..t+K-1 of its episode.

    Why a sliding window and not an action index built at setup: samples of an episode are
    consecutive (in key order) in the split's shards, so a sample's future actions are the next
    samples' ``action.npy``. Pieces are contiguous ranges, so only the last K-1 samples of a piece
    need actions from beyond it: the shard is read on past ``stop`` (at most K-1 more samples,
    images not decoded) and, when the episode continues into the next shard (data_prep keeps
    episodes within one shard; other writers may not), into the next shards, each hashed first like
    any shard whose samples are used. Memory stays at K raw samples, the extra I/O at K-1 samples per
    piece, and nothing is read at setup, which an index over millions of transitions would need.
    The emitted samples and their order are those of K = 1, so the stream, worker splitting and
    resume are unchanged. Past the episode's end the chunk is short; the decoder repeats the last action.
    """
    k = layout.chunk_size
    pending: deque[RawSample] = deque()  # samples of one episode still collecting actions, oldest first

    def extend(action: bytes) -> Iterator[RawSample]:
        for sample in pending:
            sample[ACTION_CHUNK].append(action)
        if len(pending[0][ACTION_CHUNK]) == k:
            yield pending.popleft()

    for raw in itertools.islice(samples, piece.start, piece.stop):
        if pending and _episode(raw) != _episode(pending[0]):
            yield from pending  # their episode ended: short chunks
            pending.clear()
        raw[ACTION_CHUNK] = []
        pending.append(raw)
        yield from extend(raw[ACTION_MEMBER])
    if pending:
        following = (shards[i] for i in range(piece.index + 1, len(shards)))
        tail = _episode_tail(samples, following, _episode(pending[0]), dataset_name, check, layout.members)
        for action in itertools.islice(tail, k - 1):
            yield from extend(action)
        yield from pending


def _episode_tail(rest: Iterator[RawSample], following: Iterable[Shard], episode: str, dataset_name: str,
                  check: _FirstReadCheck | None, members: tuple[str, ...]) -> Iterator[bytes]:
    """``action.npy`` bytes of the samples after a piece while they belong to ``episode`` (lazy: read on demand)."""
    for raw in rest:
        if _episode(raw) != episode:
            return
        yield raw[ACTION_MEMBER]
    for shard in following:
        samples = iter_raw_samples(shard, dataset_name, members)
        first = next(samples, None)
        if first is None:
            continue
        if _episode(first) != episode:
            return
        if check is not None:
            check(shard)
        yield first[ACTION_MEMBER]
        for raw in samples:
            if _episode(raw) != episode:
                return
            yield raw[ACTION_MEMBER]


def _endless_share(shards: list[Shard], dataset_name: str, worker: int, num_workers: int, rng: np.random.Generator,
                   shuffle: bool, check: _FirstReadCheck | None, layout: _Layout) -> Iterator[RawSample]:
    """Passes over this worker's share forever (piece order reshuffled per pass when shuffling)."""
    pieces = _worker_pieces(shards, worker, num_workers)
    if not pieces:
        raise ValueError(f"dataset {dataset_name!r} has fewer training samples than loader workers ({num_workers})")
    while True:
        order = rng.permutation(len(pieces)) if shuffle else range(len(pieces))
        yield from _read_pieces([pieces[i] for i in order], shards, dataset_name, check, layout)


def _shuffle_buffer(samples: Iterator[RawSample], size: int, rng: np.random.Generator) -> Iterator[RawSample]:
    if size <= 1:
        yield from samples
        return
    buffer: list[RawSample] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        index = int(rng.integers(size))
        yield buffer[index]
        buffer[index] = sample
    rng.shuffle(buffer)
    yield from buffer


def _swapped_views(dataset_name: str, image_views: Sequence[str]) -> tuple[str, str] | None:
    """The registry's randomly swapped view pair of this dataset (DROID), if the model reads either view."""
    config = DATASET_CONFIGS.get(dataset_name)
    pair = None if config is None else config.swapped_views
    return pair if pair is not None and set(pair) & set(image_views) else None


def views_swapped(seed: int, epoch: int, dataset_name: str, episode: str) -> bool:
    """Whether this episode's two swappable views trade places this epoch: a fair coin per (seed, epoch, dataset, episode).

    OpenVLA flips ``tf.random.uniform() > 0.5`` per trajectory each time it reads one (unseeded).
    Here the coin is a hash, so every sample of an episode agrees wherever it is decoded (any
    worker, rank or shuffle order) and a resumed run makes the same choices.
    """
    digest = hashlib.blake2b(f"{seed}/{epoch}/{dataset_name}/{episode}".encode(), digest_size=8).digest()
    return digest[0] & 1 == 1


@dataclass
class _SampleDecoder:
    """Raw sample -> processor sample (+ ``dataset_name``, ``sample_key``): check, decode, resize, optionally augment, tokenize.

    ``bounded_dims[dataset]`` marks the action dimensions normalization put in [-1, 1]. Any decode or
    validation error becomes a :class:`CorruptShardError` naming the shard and the sample key, so a
    bad sample can be found among millions. Views are resized and augmented one after the other
    with the sample's generator, so each view gets its own random crop and colour jitter (as Octo's
    and OpenVLA-OFT's ``augment`` give each image its own seed) and one view consumes exactly the
    draws it always did. ``proprio_dims[dataset]`` (None: no proprio) is the proprio size the
    statistics promise. The ``l1`` head gets the [K, D] chunk and its ``action_pad_mask``.
    ``swapped_views[dataset]`` are two views that trade places in the episodes :func:`views_swapped`
    picks with ``swap_seed`` and the epoch (OpenVLA's random DROID exterior-camera swap).
    """

    processor: VLAProcessor
    bounded_dims: Mapping[str, np.ndarray]
    augmentation: OpenVLAAugmentation | None = None
    image_views: tuple[str, ...] = ("primary",)
    chunk_size: int = 1
    proprio_dims: Mapping[str, int] | None = None
    deferred_augmentation: OpenVLAAugmentation | None = None
    swapped_views: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    swap_seed: int = 0

    @property
    def draws(self) -> bool:
        """Whether decoding uses the sample's generator (augmentation); streams build one per sample only then."""
        return self.augmentation is not None or self.deferred_augmentation is not None

    def __call__(self, raw: RawSample, rng: np.random.Generator | None = None, epoch: int = 0) -> dict[str, Any]:
        if self.draws and rng is None:
            raise ValueError("augmentation needs a random generator")
        try:
            sample = self._decode(raw, rng, epoch)
        except (OSError, ValueError) as err:  # PIL, numpy, UTF-8, tokenizer and range checks
            raise CorruptShardError(f"bad sample {raw['__key__']!r} in shard {raw['__shard__']}: {err}") from err
        sample["dataset_name"] = raw["dataset_name"]
        sample["sample_key"] = raw["__key__"]
        return sample

    def _decode(self, raw: RawSample, rng: np.random.Generator | None, epoch: int) -> dict[str, Any]:
        bounded = self.bounded_dims[raw["dataset_name"]]
        options: dict[str, np.ndarray] = {}
        if self.processor.action_head == "tokens":
            action = read_array(raw[ACTION_MEMBER])
            check_normalized_action(action, bounded)
        else:
            action, options["action_pad_mask"] = self._chunk(raw.get(ACTION_CHUNK, [raw[ACTION_MEMBER]]), bounded)
        instruction = read_text(raw[INSTRUCTION_MEMBER])
        images = [self._image(raw[image_member(view)], rng) for view in self._views(raw, epoch)]
        if self.proprio_dims is not None:
            options["proprio"] = read_array(raw[PROPRIO_MEMBER])
            expected = self.proprio_dims[raw["dataset_name"]]
            if options["proprio"].shape != (expected,):
                raise ValueError(f"proprio has shape {options['proprio'].shape}, the dataset statistics have {expected} dimensions")
        sample = self.processor.training_sample(images[0] if len(images) == 1 else images, instruction, action, **options)
        if self.deferred_augmentation is not None:
            sample[AUGMENT_PARAMS_KEY] = self._deferred_params(images, rng)
        return sample

    def _deferred_params(self, images: list[np.ndarray], rng: np.random.Generator) -> torch.Tensor:
        """Each view's augmentation draws, float32 [8] (one view) or [V, 8], applied later on the device.

        Decoding draws nothing, so drawing view after view here consumes the generator exactly as
        augmenting each view right after decoding it does: the two modes see the same parameters.
        """
        params = np.stack([self.deferred_augmentation.sample(rng).as_array() for _ in images])
        return torch.from_numpy(params[0] if len(images) == 1 else params)

    def _views(self, raw: RawSample, epoch: int) -> tuple[str, ...]:
        """The members read for ``image_views``: a swapped dataset's two views exchanged in its chosen episodes."""
        pair = self.swapped_views.get(raw["dataset_name"])
        if pair is None or not views_swapped(self.swap_seed, epoch, raw["dataset_name"], _episode(raw)):
            return self.image_views
        exchange = {pair[0]: pair[1], pair[1]: pair[0]}
        return tuple(exchange.get(view, view) for view in self.image_views)

    def _image(self, jpeg: bytes, rng: np.random.Generator | None) -> np.ndarray:
        """OpenVLA's order: TF's JPEG pixels, dlimp's Lanczos-3 resize to the backbone's S x S, augment, then
        the backbone's transform (a no-op on S x S under resize-naive / letterbox; resize-crop's upscale + crop)."""
        transform = self.processor.image_transform
        image = lanczos_resize(read_image(jpeg), transform.image_size)
        if self.augmentation is not None:
            image = self.augmentation(image, rng)
        return transform.resize_array(image)

    def _chunk(self, members: list[bytes], bounded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[K, D] actions (the last one repeated past the episode's end) and the bool [K] mask of those repeats."""
        actions = [read_array(member) for member in members]
        for step, action in enumerate(actions):
            try:
                check_normalized_action(action, bounded)
            except ValueError as err:
                raise ValueError(f"action chunk step {step} (sample t+{step} of the episode): {err}") from err
        real = len(actions)
        if not 1 <= real <= self.chunk_size:
            raise ValueError(f"action chunk holds {real} steps, expected 1..{self.chunk_size}")
        actions += [actions[-1]] * (self.chunk_size - real)
        return np.stack(actions), np.arange(self.chunk_size) >= real


def _worker_slot() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class _MixtureStream(IterableDataset):
    """One epoch of the weighted training mixture for one rank; see the module docstring."""

    def __init__(self, datasets: list[PreparedDataset], weights: list[float], split: str, decoder: _SampleDecoder,
                 batch_size: int, batches_per_rank: int, rank: int, world_size: int, shuffle_buffer: int, seed: int,
                 check: _FirstReadCheck | None, layout: _Layout):
        super().__init__()
        self.shards = [split_shards(dataset, split) for dataset in datasets]
        self.check, self.layout = check, layout
        self.names = [dataset.dataset for dataset in datasets]
        self.weights = np.asarray(weights, dtype=np.float64)
        self.decoder, self.batch_size, self.batches_per_rank = decoder, batch_size, batches_per_rank
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self.epoch = 0
        self.skip_batches = 0

    def __len__(self) -> int:
        return self.batches_per_rank * self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        physical, num_workers = _worker_slot()
        worker = (physical + self.skip_batches) % num_workers  # logical role; see the module docstring
        my_batches = len(range(worker, self.batches_per_rank, num_workers))
        skipped = len(range(worker, self.skip_batches, num_workers))
        global_worker, total_workers = self.rank * num_workers + worker, self.world_size * num_workers
        raw = self._raw_stream(global_worker, total_workers)
        n_skip, n_total = skipped * self.batch_size, my_batches * self.batch_size
        draws = self.decoder.draws
        for index, sample in enumerate(itertools.islice(raw, n_skip, n_total), start=n_skip):
            rng = np.random.default_rng([self.seed, self.epoch, global_worker, index]) if draws else None
            yield self.decoder(sample, rng, self.epoch)

    def _raw_stream(self, worker: int, num_workers: int) -> Iterator[RawSample]:
        """Weighted interleave of per-dataset shuffled streams; nothing is decoded here."""
        seeds = np.random.SeedSequence([self.seed, self.epoch, worker]).spawn(2 * len(self.names) + 1)
        rngs = [np.random.default_rng(s) for s in seeds]
        shuffle = self.shuffle_buffer > 1
        streams = []
        for i, (shards, name, weight) in enumerate(zip(self.shards, self.names, self.weights)):
            buffer = max(1, round(self.shuffle_buffer * weight)) if shuffle else 1
            endless = _endless_share(shards, name, worker, num_workers, rngs[2 * i], shuffle, self.check, self.layout)
            streams.append(_shuffle_buffer(endless, buffer, rngs[2 * i + 1]))
        pick = rngs[-1]  # serves only this choice, so drawing a block ahead changes nothing else
        while True:
            # One call per block: choice(size=n) draws the same uniforms, in the same order, as n single calls.
            for choice in pick.choice(len(streams), size=_PICK_BLOCK, p=self.weights).tolist():
                yield next(streams[choice])


class _SequentialStream(IterableDataset):
    """Every sample of a split once, dataset after dataset, no augmentation (validation)."""

    def __init__(self, datasets: list[PreparedDataset], split: str, decoder: _SampleDecoder, rank: int, world_size: int,
                 check: _FirstReadCheck | None, layout: _Layout):
        super().__init__()
        self.shards = [(dataset.dataset, split_shards(dataset, split)) for dataset in datasets]
        self.decoder, self.rank, self.world_size, self.check, self.layout = decoder, rank, world_size, check, layout

    def __iter__(self) -> Iterator[dict[str, Any]]:
        physical, num_workers = _worker_slot()
        worker, total = self.rank * num_workers + physical, self.world_size * num_workers
        for name, shards in self.shards:
            for sample in _read_pieces(_worker_pieces(shards, worker, total), shards, name, self.check, self.layout):
                yield self.decoder(sample)


@dataclass(frozen=True)
class _CollateWithAugmentParams:
    """The processor's collate, with the per-sample augmentation parameters (if any) stacked into one tensor."""

    processor: VLAProcessor

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.processor.collate(samples)
        if AUGMENT_PARAMS_KEY in batch:
            batch[AUGMENT_PARAMS_KEY] = torch.stack(batch[AUGMENT_PARAMS_KEY])
        return batch


class _EpochLoader(DataLoader):
    """DataLoader that asks for (epoch, batches to skip) when an epoch starts and counts batches handed out."""

    def __init__(self, dataset: _MixtureStream, begin_epoch: Callable[[], tuple[int, int]], **kwargs: Any):
        super().__init__(dataset, **kwargs)
        self._begin_epoch = begin_epoch
        self.epoch = 0
        self.batches_yielded = 0

    def __iter__(self) -> Iterator[Any]:
        self.epoch, skip = self._begin_epoch()
        self.dataset.epoch, self.dataset.skip_batches = self.epoch, skip  # copied into workers at iter() time
        self.batches_yielded = skip
        for batch in super().__iter__():
            self.batches_yielded += 1
            yield batch


class VLADataModule(pl.LightningDataModule):
    """Weighted mixture of prepared datasets under ``data_root/<dataset_name>/`` for VLA training.

    ``data_root`` is a local path or an fsspec URL (``s3://bucket/oxe``, ``gs://...``, ``hf://...``;
    :mod:`vla.data.locations`): manifests, statistics and shards are then read through fsspec,
    shard by shard, streamed and never copied to local disk, with the same stream, resume and
    integrity checks as a local run; errors name the URL.

    ``processor`` (the model's :class:`VLAProcessor`) must be given or attached with
    :meth:`attach_processor` before the loaders are built. ``dataset_statistics`` is readable
    without it, so the model can be built from the data's statistics first.

    ``verify_shards`` checks the shards the loaders read against ``manifest.json``'s sha256:

    - ``first_read`` (default): each process hashes a shard's whole file when it first opens it,
      before trusting any of its samples, and raises :class:`CorruptShardError` naming the file.
      Training starts at once; the cost is one extra sequential read of each shard a process opens
      (the tar read that follows hits the page cache), small next to JPEG decoding.
    - ``setup``: hash every shard of the train and val splits once in :meth:`setup` (progress
      bar), so damage is found before the first step. Every rank hashes everything.
    - ``off``: only the tar structure and the per-sample checks.

    ``on_corrupt_shard="skip"`` drops shards whose hash does not match (warning, counted in
    :attr:`skipped_shards` / :attr:`integrity_counts` for the trainer to log) instead of raising.
    It needs ``verify_shards="setup"``: the shards are then dropped before the stream is laid out,
    so every rank and worker agrees on the slices, the epoch holds only intact samples, the counts
    are known in the process that logs, and a resumed run over the same files replays the same
    stream. A split left with no intact shard still raises. Mixture weights keep the manifest sizes.

    Action chunks (docs/action-chunks.md): ``chunk_size`` K > 1 gives each sample the normalized
    actions t..t+K-1 of its own episode (past the end the last action repeats and
    ``action_pad_mask`` marks those steps), for the ``l1`` head (whose processor must have the same
    K). ``image_views`` are the camera views fed to the model, in order (one view: ``pixel_values``
    [3, H, W] per sample, as always; several: [V, 3, H, W]); ``proprio`` adds the normalized
    ``proprio`` [P]. The samples, their order, worker and rank splitting and resume are those of
    the defaults, which give today's stream bit for bit. Checked when the datasets are loaded
    (``setup``, ``dataset_statistics``), never mid-run: every view must be in each manifest's
    ``image_views``; proprio needs a non-zero statistics ``proprio`` entry of one size across the
    mixture; K may not exceed the mean episode length (``num_transitions // num_episodes``) of any
    read split: manifests record no per-episode lengths, and counting them would read every tar
    header of an OXE-scale mixture at setup. Shorter episodes still work: their chunks are padded.

    ``image_aug`` turns on OpenVLA's augmentation (:mod:`vla.data.augmentation`); ``augment_on``
    says where it runs. ``worker``: each loader worker augments its images (numpy). ``device``: the
    workers only draw each image's parameters, with the same generator and in the same order, and
    ship them as ``image_aug_params``; :meth:`on_after_batch_transfer` augments the whole batch on
    the model's device (torch). Both modes give the same parameters and, to within float32
    rounding, the same pixels (docs/benchmarks.md, "Data loader", has the costs of each).
    """

    def __init__(
        self,
        data_root: str | Path | UrlPath,
        mixture: str | Mapping[str, float] = "vla_sim",
        batch_size: int = 32,
        num_workers: int = 2,
        shuffle_buffer: int = 10_000,
        image_aug: bool = False,
        augment_on: AugmentOn = "worker",
        balance_weights: bool = False,
        seed: int = 7,
        train_split: str = "train",
        val_split: str | None = "val",
        samples_per_epoch: int | None = None,
        processor: VLAProcessor | None = None,
        verify_shards: VerifyShards = "first_read",
        on_corrupt_shard: OnCorruptShard = "error",
        chunk_size: int = 1,
        image_views: Sequence[str] = ("primary",),
        proprio: bool = False,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        views = (image_views,) if isinstance(image_views, str) else tuple(image_views)
        if not views or len(set(views)) != len(views) or not all(isinstance(v, str) and v for v in views):
            raise ValueError(f"image_views must be distinct view names (e.g. ['primary', 'wrist']), got {list(views)}")
        _check_integrity_options(verify_shards, on_corrupt_shard)
        if augment_on not in get_args(AugmentOn):
            raise ValueError(f"augment_on must be one of {get_args(AugmentOn)}, got {augment_on!r}")
        self.augment_on = augment_on
        self.chunk_size, self.image_views, self.proprio = chunk_size, views, bool(proprio)
        self.data_root = as_location(data_root)
        self.mixture = mixture if isinstance(mixture, str) else dict(mixture)
        self.batch_size, self.num_workers, self.shuffle_buffer = batch_size, num_workers, shuffle_buffer
        self.image_aug, self.balance_weights, self.seed = image_aug, balance_weights, seed
        self.train_split, self.val_split, self.samples_per_epoch = train_split, val_split, samples_per_epoch
        self.processor = processor
        self.verify_shards, self.on_corrupt_shard = verify_shards, on_corrupt_shard
        self.skipped_shards: list[SkippedShard] = []
        self._first_read = _FirstReadCheck() if verify_shards == "first_read" else None
        self._datasets: list[PreparedDataset] | None = None
        self._readable: list[PreparedDataset] | None = None
        self._weights: list[float] = []
        self._train_loader: _EpochLoader | None = None
        self._resume: dict[str, int] | None = None
        self._next_epoch = 0

    def attach_processor(self, processor: VLAProcessor) -> None:
        self.processor = processor

    # --- datasets and statistics -------------------------------------------------------------
    def _load(self) -> list[PreparedDataset]:
        if self._datasets is None:
            names = [name for name, _ in resolve_mixture(self.mixture, known_datasets=None)]
            datasets = [load_dataset(self.data_root / name, name) for name in names]
            sizes = {d.dataset: num_transitions(d, self.train_split) for d in datasets}
            mixture = resolve_mixture(self.mixture, sizes, self.balance_weights)
            kept = [(d, w) for d, (_, w) in zip(datasets, mixture) if w > 0]
            self._check_layout([d for d, _ in kept])
            self._datasets, self._weights = [d for d, _ in kept], [w for _, w in kept]
        return self._datasets

    def _check_layout(self, datasets: list[PreparedDataset]) -> None:
        """Views, proprio and chunk size against what the shards hold (see the class docstring)."""
        for dataset in datasets:
            missing = [view for view in self.image_views if view not in dataset.image_views]
            if missing:
                raise ValueError(f"image_views {list(self.image_views)}: dataset {dataset.dataset!r} has no view(s) "
                                 f"{missing}; {dataset.root / MANIFEST_FILE} lists {list(dataset.image_views)}")
            pair = _swapped_views(dataset.dataset, self.image_views) or ()
            if any(view not in dataset.image_views for view in pair):
                raise ValueError(f"dataset {dataset.dataset!r} swaps views {list(pair)} at random per episode (OpenVLA's "
                                 f"exterior-camera swap), but {dataset.root / MANIFEST_FILE} lists only "
                                 f"{list(dataset.image_views)}; prepare it with both views")
        if self.proprio:
            dims = {dataset.dataset: dataset.proprio_dim() for dataset in datasets}
            absent = [name for name, dim in dims.items() if dim == 0]
            if absent:
                raise ValueError(f"proprio=True, but dataset(s) {absent} have no proprio (their dataset_statistics.json "
                                 "'proprio' entry is all zeros: the source had no state); use proprio=False")
            if len(set(dims.values())) > 1:
                raise ValueError(f"proprio sizes differ across the mixture {dims}; batches stack proprio, so they must agree")
        splits = [split for split in (self.train_split, self.val_split) if split is not None]
        for dataset in datasets:
            for split in splits:
                info = dataset.splits.get(split)
                if not info or not info["num_episodes"]:
                    continue
                limit = max(1, int(info["num_transitions"]) // int(info["num_episodes"]))
                if self.chunk_size > limit:
                    raise ValueError(
                        f"chunk_size={self.chunk_size} is larger than dataset {dataset.dataset!r} allows: its {split} episodes "
                        f"average {limit} steps ({info['num_transitions']} transitions / {info['num_episodes']} episodes in "
                        f"{dataset.root / MANIFEST_FILE}); choose chunk_size in 1..{limit}")

    def _layout(self) -> _Layout:
        """The members each raw sample keeps, and the chunk size the streams assemble."""
        members = (ACTION_MEMBER, INSTRUCTION_MEMBER, *(image_member(view) for view in self.image_views))
        if self.proprio:
            members += (PROPRIO_MEMBER,)
        extra = {dataset.dataset: tuple(image_member(view) for view in pair if view not in self.image_views)
                 for dataset in self._load() if (pair := _swapped_views(dataset.dataset, self.image_views))}
        return _Layout(members, self.chunk_size, extra)

    @property
    def dataset_statistics(self) -> dict[str, Any]:
        """``{dataset_name: statistics}`` in OpenVLA's layout; becomes ``VLA.norm_stats``.

        Each dataset's ``action`` and ``proprio`` entries also record the manifest's normalization
        kind (``"normalization": "bounds_q99" | "bounds" | "normal"``, a key OpenVLA ignores), so the
        model un-normalizes its actions with the kind its targets were normalized with.
        """
        return {dataset.dataset: with_normalization_kind(dataset.statistics[dataset.dataset], dataset.normalization)
                for dataset in self._load()}

    @property
    def sampling_weights(self) -> dict[str, float]:
        self._load()
        return {dataset.dataset: weight for dataset, weight in zip(self._datasets, self._weights)}

    @property
    def integrity_counts(self) -> dict[str, int]:
        """Shards and samples dropped by ``on_corrupt_shard="skip"`` (zero otherwise), for logging."""
        return {"skipped_shards": len(self.skipped_shards),
                "skipped_samples": sum(shard.num_samples for shard in self.skipped_shards)}

    def setup(self, stage: str | None = None) -> None:
        self._ready()

    def _ready(self) -> list[PreparedDataset]:
        """The datasets the loaders read: loaded and, with ``verify_shards="setup"``, hashed once."""
        if self._readable is None:
            datasets = self._load()
            self._readable = self._verify_all(datasets) if self.verify_shards == "setup" else datasets
        return self._readable

    def _verify_all(self, datasets: list[PreparedDataset]) -> list[PreparedDataset]:
        """Hash the train/val shards; raise on the first mismatch, or drop and count them with ``skip``."""
        splits = [split for split in (self.train_split, self.val_split) if split is not None]
        jobs = [(d, split, entry) for d in datasets for split in splits if split in d.splits
                for entry in d.splits[split]["shards"]]
        skipped: list[SkippedShard] = []
        for dataset, split, entry in tqdm(jobs, desc="verify shards", unit="shard", disable=self._rank_and_world()[0] != 0):
            try:
                verify_shard(dataset.root / entry["file"], entry["sha256"])
            except CorruptShardError as err:
                if self.on_corrupt_shard == "error":
                    raise
                skipped.append(SkippedShard(dataset.dataset, split, entry["file"], int(entry["num_samples"]), str(err)))
                warnings.warn(f"skipping {err}", stacklevel=2)
        self.skipped_shards = skipped
        return [_without_shards(dataset, skipped) for dataset in datasets]

    # --- loaders -------------------------------------------------------------------------------
    def _decoder(self, augment: bool) -> _SampleDecoder:
        if self.processor is None:
            raise ValueError("VLADataModule needs the model's processor: pass processor= or call attach_processor()")
        datasets = self._ready()
        bounded = {dataset.dataset: dataset.bounded_action_dims() for dataset in datasets}
        self._check_processor(bounded)
        proprio_dims = {dataset.dataset: dataset.proprio_dim() for dataset in datasets} if self.proprio else None
        augmentation = OpenVLAAugmentation() if augment else None
        on_device = self.augment_on == "device"
        transform = self.processor.image_transform
        reshapes = transform.resize_strategy != "resize-naive" and transform.scale_size != transform.image_size
        if augmentation is not None and on_device and reshapes:
            raise ValueError(f"augment_on='device' augments the model's input images, but this backbone's transform "
                             f"({transform.resize_strategy}, crop_pct {transform.crop_pct}) still resizes and crops the "
                             "augmented S x S image, which the device cannot reproduce; use augment_on='worker'")
        swapped = {dataset.dataset: pair for dataset in datasets if (pair := _swapped_views(dataset.dataset, self.image_views))}
        return _SampleDecoder(self.processor, bounded, None if on_device else augmentation, self.image_views,
                              self.chunk_size, proprio_dims, deferred_augmentation=augmentation if on_device else None,
                              swapped_views=swapped, swap_seed=self.seed)

    def _check_processor(self, bounded: Mapping[str, np.ndarray]) -> None:
        """The model's head must take what the stream yields: one action (tokens) or [K, D] chunks (l1)."""
        processor = self.processor
        if processor.action_head == "tokens":
            if self.chunk_size != 1:
                raise ValueError(f"chunk_size={self.chunk_size} needs an action-chunk model (action_head 'l1'); "
                                 "the processor's head is 'tokens', which predicts one action (chunk_size 1)")
            return
        if processor.chunk_size != self.chunk_size:
            raise ValueError(f"VLADataModule chunk_size={self.chunk_size}, but the model's processor has "
                             f"chunk_size={processor.chunk_size}; they must agree")
        wrong = {name: dims.size for name, dims in bounded.items() if dims.size != processor.action_dim}
        if wrong:
            raise ValueError(f"the model predicts {processor.action_dim}-D actions, but dataset(s) have {wrong}")

    def _rank_and_world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def train_dataloader(self) -> DataLoader:
        decoder = self._decoder(self.image_aug)
        datasets = self._ready()
        rank, world_size = self._rank_and_world()
        samples = self.samples_per_epoch or sum(num_transitions(d, self.train_split) for d in datasets)
        batches_per_rank = samples // (world_size * self.batch_size)
        if batches_per_rank < 1:
            raise ValueError(f"samples_per_epoch={samples} is less than one batch per rank ({world_size} x {self.batch_size})")
        stream = _MixtureStream(datasets, self._weights, self.train_split, decoder, self.batch_size, batches_per_rank,
                                rank, world_size, self.shuffle_buffer, self.seed, self._first_read, self._layout())
        self._train_loader = _EpochLoader(stream, self._begin_epoch, batch_size=self.batch_size, num_workers=self.num_workers,
                                          collate_fn=_CollateWithAugmentParams(self.processor))
        return self._train_loader

    def val_dataloader(self) -> DataLoader:
        if self.val_split is None:
            return []
        rank, world_size = self._rank_and_world()
        stream = _SequentialStream(self._ready(), self.val_split, self._decoder(augment=False), rank, world_size,
                                   self._first_read, self._layout())
        return DataLoader(stream, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=self.processor.collate)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``augment_on="device"``: augment the batch's images where it landed, with the parameters its workers drew.

        Lightning calls this for every batch after moving it to the model's device; only training
        batches carry parameters (validation is never augmented), and they leave the batch here.
        """
        if isinstance(batch, dict) and AUGMENT_PARAMS_KEY in batch:
            params = batch.pop(AUGMENT_PARAMS_KEY)
            batch["pixel_values"] = augment_pixel_values(batch["pixel_values"], params)
        return batch

    def _begin_epoch(self) -> tuple[int, int]:
        """(epoch, batches to skip) for the epoch that is starting: Lightning's epoch, or our own count."""
        epoch = self.trainer.current_epoch if self.trainer is not None else self._next_epoch
        self._next_epoch = epoch + 1
        skip = 0
        if self._resume is not None and self._resume["epoch"] == epoch:
            skip = self._resume["batches_consumed"]
        self._resume = None
        return epoch, skip

    # --- resumable position --------------------------------------------------------------------
    def _batches_consumed(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None and trainer.state.fn == "fit":
            # The loader runs one batch ahead of training (prefetch); Lightning's counter does not.
            return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.ready
        if self._train_loader is None:
            return self._next_epoch, 0
        return self._train_loader.epoch, self._train_loader.batches_yielded

    def state_dict(self) -> dict[str, Any]:
        """Position in the training stream (stored in checkpoints by Lightning)."""
        epoch, consumed = self._batches_consumed()
        return {"epoch": epoch, "batches_consumed": consumed, "num_workers": self.num_workers,
                "batch_size": self.batch_size, "seed": self.seed, "world_size": self._rank_and_world()[1]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume: the next training epoch started is ``epoch``, skipping ``batches_consumed`` batches."""
        for key in ("epoch", "batches_consumed"):
            if key not in state_dict:
                raise ValueError(f"VLADataModule state is missing {key!r} (got {sorted(state_dict)})")
        current = {"num_workers": self.num_workers, "batch_size": self.batch_size, "seed": self.seed,
                   "world_size": self._rank_and_world()[1]}
        changed = {k: (state_dict[k], v) for k, v in current.items() if k in state_dict and state_dict[k] != v}
        if changed:
            warnings.warn(f"data loading settings changed since the checkpoint {changed}: the resumed stream skips "
                          "the same number of batches but is not the continuation of the interrupted one", stacklevel=2)
        self._resume = {"epoch": int(state_dict["epoch"]), "batches_consumed": int(state_dict["batches_consumed"])}
        self._next_epoch = self._resume["epoch"]


def _check_integrity_options(verify_shards: str, on_corrupt_shard: str) -> None:
    if verify_shards not in get_args(VerifyShards):
        raise ValueError(f"verify_shards must be one of {get_args(VerifyShards)}, got {verify_shards!r}")
    if on_corrupt_shard not in get_args(OnCorruptShard):
        raise ValueError(f"on_corrupt_shard must be one of {get_args(OnCorruptShard)}, got {on_corrupt_shard!r}")
    if on_corrupt_shard == "skip" and verify_shards != "setup":
        raise ValueError("on_corrupt_shard='skip' needs verify_shards='setup': shards must be dropped before the "
                         "stream is laid out (see VLADataModule)")


def _without_shards(prepared: PreparedDataset, skipped: list[SkippedShard]) -> PreparedDataset:
    """``prepared`` minus the skipped shards; a split that loses every shard is an error, not an empty epoch."""
    splits = {}
    for split, info in prepared.splits.items():
        gone = {s.file for s in skipped if s.dataset == prepared.dataset and s.split == split}
        shards = [entry for entry in info["shards"] if entry["file"] not in gone]
        if info["shards"] and not shards:
            raise CorruptShardError(f"every {split} shard of {prepared.root} is corrupt: {sorted(gone)}")
        splits[split] = {**info, "shards": shards, "num_transitions": sum(int(e["num_samples"]) for e in shards)}
    return dataclasses.replace(prepared, splits=splits)
