"""Sim demos as a real RLDS tfds dataset ``vla_sim`` (format: docs/contracts.md, "Sim demos (RLDS)").

``generate_rlds`` rolls out the scripted expert of :mod:`vla.sim` and writes the episodes with a tfds
builder; it lives here, with the other TensorFlow code, so the simulator itself never imports TF.
CLI: ``vla-sim out=<dir> episodes=N`` (``python -m data_prep.sim_rlds``).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tqdm import tqdm

from vla.contract.images import JPEG_QUALITY
from vla.sim.demos import (
    DATASET_NAME,
    METADATA_FILE,
    VERSION,
    episode_plan,
    record_episode,
    recorded_params,
    validated_val_count,
)
from vla.sim.suite import SimTaskSuite

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


def generate_rlds(
    out_dir: str | Path,
    episodes: int = 200,
    seed: int = 0,
    image_size: int = 224,
    suite: str = "sim_all",
    val_fraction: float = 0.1,
    n_objects: int = 3,
    noise_std: float = 0.002,
    paired: bool = False,
    progress: bool = True,
) -> Path:
    """Write `<out_dir>/vla_sim/1.0.0/` (train + val) unless it already exists with these parameters.

    Returns `out_dir`, the tfds data dir that holds `vla_sim/`. With ``paired`` scenes the val split
    starts at a scene boundary, so no val scene is also a training scene.
    """
    params = {"episodes": episodes, "seed": seed, "image_size": image_size, "val_fraction": val_fraction,
              "suite": suite, "n_objects": n_objects, "noise_std": noise_std, "paired": paired}
    task_suite = SimTaskSuite(suite, n_objects=n_objects)
    n_val = validated_val_count(episodes, val_fraction, task_suite.n_tasks if paired else 1)
    out_dir = Path(out_dir)
    existing = _existing_params(out_dir)
    if existing is not None:
        if existing != params:
            raise ValueError(f"{out_dir / DATASET_NAME} already holds a dataset generated with {existing}, not {params}; "
                             "use another out dir or delete it")
        return out_dir
    plan = episode_plan(episodes, seed, task_suite, paired)
    bar = tqdm(total=episodes, desc="sim demos", unit="episode", disable=not progress)

    def episodes_of(split: str, indices: range):
        def make() -> Iterator[dict[str, Any]]:
            for index, global_index in enumerate(indices):
                task_id, scene_seed = plan[global_index]
                steps = record_episode(task_suite, task_id, scene_seed, image_size, noise_std)
                bar.update(1)
                yield {
                    "steps": steps,
                    "episode_metadata": {
                        "file_path": f"{DATASET_NAME}/{split}/episode_{index:06d}",
                        "episode_id": f"{split}_{index:06d}",
                        "task_id": np.int32(task_id),
                        "seed": np.int64(scene_seed),
                    },
                }
        return make

    from data_prep.sim_rlds import write_rlds  # TensorFlow only when actually writing

    split_episodes = {
        "train": episodes_of("train", range(episodes - n_val)),
        "val": episodes_of("val", range(episodes - n_val, episodes)),
    }
    with bar:
        write_rlds(out_dir, image_size, split_episodes, params)
    return out_dir




def _existing_params(out_dir: Path) -> dict[str, Any] | None:
    """Generation parameters of a complete dataset in `out_dir` (tfds renames it into place when done)."""
    version_dir = out_dir / DATASET_NAME / VERSION
    if not (version_dir / "dataset_info.json").is_file():
        return None
    if not (version_dir / METADATA_FILE).is_file():
        raise ValueError(f"{version_dir} is a vla_sim dataset without generation metadata; use another out dir")
    return recorded_params(version_dir)


if __name__ == "__main__":  # python -m data_prep.sim_rlds out=<dir> ... (same as vla-sim)
    from data_prep.cli import sim

    sim()
