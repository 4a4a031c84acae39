"""MP4 rollout videos (imageio + the ffmpeg binary bundled in the imageio-ffmpeg wheel)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vla.atomic import atomic_write

VIDEO_FPS = 30  # OpenVLA's LIBERO replay videos use 30 fps


def video_name(task_id: int, trial: int, success: bool) -> str:
    return f"task{task_id:02d}_trial{trial:03d}_{'success' if success else 'failure'}.mp4"


def write_mp4(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: int = VIDEO_FPS) -> Path:
    """Write uint8 HxWx3 frames; the file appears only once complete (tmp + rename)."""
    if not frames:
        raise ValueError(f"No frames to write to {path}")
    try:
        import imageio.v2 as imageio
    except ImportError as err:
        raise ImportError("Rollout videos need imageio[ffmpeg]: pip install -e '.[eval]'") from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1) as writer:
            for frame in frames:
                writer.append_data(np.asarray(frame, dtype=np.uint8))

    return atomic_write(path, write)
