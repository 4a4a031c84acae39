"""Read RLDS (tfds builder directories) into per-episode dicts of NumPy arrays.

The only module that imports TensorFlow / tensorflow-datasets (the optional ``rlds`` extra).
Image features are read with ``SkipDecoding`` so their original encoded bytes reach the shards.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

_ALL_STEPS = 2**31 - 1
tf.config.set_visible_devices([], "GPU")  # reading needs no accelerator; keep TF off it
logging.getLogger("absl").setLevel(logging.WARNING)  # tfds logs every split it opens at INFO


def builder_dir(source: str | Path, dataset: str) -> Path:
    """``<source>/<dataset>/<version>`` with the highest version present."""
    root = Path(source) / dataset
    versions = [p for p in root.glob("*") if (p / "dataset_info.json").is_file()] if root.is_dir() else []
    if not versions:
        raise FileNotFoundError(f"no tfds builder directory (<version>/dataset_info.json) under {root}")
    return max(
        versions,
        key=lambda p: tfds.core.Version(p.name) if tfds.core.Version.is_valid(p.name) else tfds.core.Version("0.0.0"),
    )


def open_builder(source: str | Path, dataset: str) -> tfds.core.DatasetBuilder:
    return tfds.builder_from_directory(str(builder_dir(source, dataset)))


def split_sizes(builder: tfds.core.DatasetBuilder) -> dict[str, int]:
    return {name: int(info.num_examples) for name, info in builder.info.splits.items()}


def _step_features(builder: tfds.core.DatasetBuilder) -> tfds.features.FeaturesDict:
    steps = builder.info.features["steps"]
    return steps.feature


def image_shapes(builder: tfds.core.DatasetBuilder) -> dict[str, tuple]:
    """Observation key -> declared image shape, for every tfds ``Image`` observation."""
    observation = _step_features(builder)["observation"]
    return {k: tuple(f.shape) for k, f in observation.items() if isinstance(f, tfds.features.Image)}


def _skip_image_decoding(feature: Any) -> Any:
    """Mirror of the feature tree with ``SkipDecoding`` on every Image (None where nothing to skip)."""
    if isinstance(feature, tfds.features.Image):
        return tfds.decode.SkipDecoding()
    if isinstance(feature, tfds.features.Dataset):
        return _skip_image_decoding(feature.feature)
    if isinstance(feature, tfds.features.FeaturesDict):
        children = {k: _skip_image_decoding(v) for k, v in feature.items()}
        children = {k: v for k, v in children.items() if v is not None}
        return children or None
    return None


def _batch_steps(episode: dict[str, Any]) -> dict[str, Any]:
    """Turn the nested ``steps`` dataset into step-batched tensors inside the tf.data graph.

    Much faster than iterating steps in Python. An empty episode yields zero-length tensors (the
    placeholder batch after the real one), so the caller can report it instead of tf.data failing.
    """
    steps = episode["steps"].batch(_ALL_STEPS)
    empty = tf.nest.map_structure(lambda spec: tf.zeros([0, *spec.shape[1:]], spec.dtype), steps.element_spec)
    batched = steps.concatenate(tf.data.Dataset.from_tensors(empty)).take(1).get_single_element()
    return {**episode, "steps": batched}


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_episodes(builder: tfds.core.DatasetBuilder, split: str, start: int, stop: int) -> Iterator[tuple[dict, dict]]:
    """Episodes ``start..stop-1`` of ``split`` in file order as ``(metadata, episode)``.

    ``episode`` is step-batched (see :mod:`vla.data.transforms`): arrays ``[T, ...]``, encoded images
    and text as object arrays of bytes; an empty episode has ``T == 0``.
    """
    decoders = _skip_image_decoding(builder.info.features)
    dataset = builder.as_dataset(
        split=f"{split}[{start}:{stop}]",
        decoders=decoders,
        shuffle_files=False,
        read_config=tfds.ReadConfig(interleave_cycle_length=1),
    )
    for record in tfds.as_numpy(dataset.map(_batch_steps)):
        metadata = {k: _plain(v) for k, v in record.get("episode_metadata", {}).items()}
        yield metadata, record["steps"]


class RLDSSource:
    """The RLDS episode source of the pipeline: ``<source>/<dataset>/<version>`` opened once per process.

    Same interface as :class:`data_prep.lerobot_reader.LeRobotSource`: ``split_sizes()``,
    ``image_shapes()`` and ``read_episodes(split, start, stop, decode_images)`` yielding
    ``(metadata, step-batched episode)``; encoded images are cheap, so ``decode_images`` is ignored.
    """

    def __init__(self, source: str | Path, dataset: str):
        self.builder = open_builder(source, dataset)

    def split_sizes(self) -> dict[str, int]:
        return split_sizes(self.builder)

    def image_shapes(self) -> dict[str, tuple]:
        return image_shapes(self.builder)

    def read_episodes(
        self, split: str, start: int, stop: int, decode_images: bool = True
    ) -> Iterator[tuple[dict, dict]]:
        return read_episodes(self.builder, split, start, stop)
