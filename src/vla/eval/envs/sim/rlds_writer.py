"""Writes sim demos as a real RLDS tfds dataset `vla_sim` (shared contract S1).

The only sim module that imports TensorFlow; `generate.py` imports it lazily so the env never does.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from vla.eval.envs.sim.generate import DATASET_NAME, VERSION

JPEG_QUALITY = 95  # tf.image.encode_jpeg's default, which tfds would otherwise use
Episode = dict[str, Any]  # {"steps": [step dicts], "episode_metadata": {...}} of numpy values


class VlaSim(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """tfds builder over episodes produced by a callable per split (kept in generation order)."""

    name = DATASET_NAME
    VERSION = tfds.core.Version(VERSION)

    def __init__(
        self,
        data_dir: Path,
        image_size: int,
        episodes_by_split: dict[str, Callable[[], Iterable[Episode]]],
        generation_params: dict[str, Any],
    ) -> None:
        self._image_size = image_size
        self._episodes_by_split = episodes_by_split
        self._generation_params = generation_params
        super().__init__(data_dir=str(data_dir))

    def _info(self) -> tfds.core.DatasetInfo:
        image = tfds.features.Image(shape=(self._image_size, self._image_size, 3), dtype=np.uint8, encoding_format="jpeg")
        step = {
            "observation": {
                "image": image,
                "wrist_image": image,
                "state": tfds.features.Tensor(shape=(7,), dtype=np.float32),
            },
            "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
            "language_instruction": tfds.features.Text(),
            "is_first": np.bool_,
            "is_last": np.bool_,
            "is_terminal": np.bool_,
            "reward": tfds.features.Scalar(dtype=np.float32),
            "discount": tfds.features.Scalar(dtype=np.float32),
        }
        metadata = {"file_path": tfds.features.Text(), "episode_id": tfds.features.Text(), "task_id": np.int32, "seed": np.int64}
        return tfds.core.DatasetInfo(
            builder=self,
            description="Scripted-expert demos of the built-in vla sim tabletop (state = EEF xyz, rpy, gripper opening).",
            features=tfds.features.FeaturesDict({"steps": tfds.features.Dataset(step), "episode_metadata": metadata}),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(self._generation_params),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        return {split: self._generate_examples(make) for split, make in self._episodes_by_split.items()}

    def _generate_examples(self, make_episodes: Callable[[], Iterable[Episode]]):
        for episode in make_episodes():
            steps = [
                {**step, "observation": {**step["observation"], **{
                    key: self._jpeg(step["observation"][key]) for key in ("image", "wrist_image")
                }}}
                for step in episode["steps"]
            ]
            yield episode["episode_metadata"]["episode_id"], {**episode, "steps": steps}

    def _jpeg(self, image: np.ndarray) -> bytes:
        """JPEG bytes via PIL: several times faster than tfds's per-image TensorFlow encoding."""
        if image.shape != (self._image_size, self._image_size, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 {self._image_size}x{self._image_size}x3 image, got {image.dtype} {image.shape}")
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()


def write_rlds(
    out_dir: Path,
    image_size: int,
    episodes_by_split: dict[str, Callable[[], Iterable[Episode]]],
    generation_params: dict[str, Any],
) -> Path:
    """Build `<out_dir>/vla_sim/1.0.0/` from the episodes and return the version directory."""
    builder = VlaSim(out_dir, image_size, episodes_by_split, generation_params)
    with tempfile.TemporaryDirectory() as download_dir:  # nothing is downloaded; keep out_dir clean
        builder.download_and_prepare(
            download_dir=download_dir, download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return Path(builder.data_dir)
