"""Numpy rasteriser for the tabletop: a fixed oblique camera and a top-down wrist camera.

Objects are drawn as flat-shaded boxes/discs with a painter's algorithm (far to near). Height is
shown by an oblique shift (primary view) and by the gripper's shadow, so a policy can read depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vla.sim.scene import BLOCK_HALF, BLOCK_HEIGHT, COLOURS, PLATE_RADIUS, TABLE_HALF, Z_MAX, Scene

FLOOR = np.array([90, 90, 100], dtype=np.uint8)
TABLE = np.array([196, 164, 124], dtype=np.uint8)
PLATE = np.array([242, 242, 242], dtype=np.uint8)
PLATE_RIM = np.array([200, 200, 205], dtype=np.uint8)
FINGER = np.array([50, 50, 55], dtype=np.uint8)
PALM = np.array([110, 110, 120], dtype=np.uint8)
SHADOW_ALPHA = 0.45
FINGER_LENGTH = 0.04
FINGER_WIDTH = 0.012
PALM_HEIGHT = 0.015
ARM = np.array([150, 150, 160], dtype=np.uint8)


@dataclass(frozen=True)
class Camera:
    """Orthographic view of the square [cx +- half_extent] x [cy +- half_extent]; height z shifts
    points up the image by `oblique * z` (in metres of table), which fakes a tilted camera."""

    cx: float
    cy: float
    half_extent: float
    oblique: float

    def to_pixels(self, x: float, y: float, z: float, size: int) -> tuple[float, float]:
        scale = size / (2 * self.half_extent)
        u = (x - self.cx + self.half_extent) * scale
        v = (self.cy + self.half_extent - y - self.oblique * z) * scale
        return u, v


PRIMARY_CAMERA = Camera(cx=0.0, cy=0.03, half_extent=0.3, oblique=0.8)
WRIST_HALF_EXTENT = 0.09


def wrist_camera(scene: Scene) -> Camera:
    """Looks straight down from the gripper, so the fingers stay centred in the image."""
    return Camera(cx=float(scene.gripper_pos[0]), cy=float(scene.gripper_pos[1]), half_extent=WRIST_HALF_EXTENT, oblique=0.0)


def render_view(scene: Scene, camera: Camera, size: int) -> np.ndarray:
    """Rasterise the scene as seen by `camera` into a uint8 [size, size, 3] image."""
    image = _solid_image(size, tuple(FLOOR)).copy()
    _fill_box_face(image, camera, (-TABLE_HALF, TABLE_HALF), (-TABLE_HALF, TABLE_HALF), 0.0, TABLE)
    _fill_disc(image, camera, scene.plate_xy, PLATE_RADIUS, PLATE_RIM)
    _fill_disc(image, camera, scene.plate_xy, PLATE_RADIUS * 0.8, PLATE)
    _shade_disc(image, camera, scene.gripper_pos[:2], 0.022, SHADOW_ALPHA)
    for i in sorted(range(len(scene.colours)), key=lambda i: (-scene.block_pos[i, 1], scene.block_pos[i, 2])):
        _draw_block(image, camera, scene.block_pos[i], np.array(COLOURS[scene.colours[i]], dtype=np.uint8))
    _draw_gripper(image, camera, scene)
    return image


def _draw_block(image: np.ndarray, camera: Camera, pos: np.ndarray, colour: np.ndarray) -> None:
    x, y, z = pos
    xs, ys = (x - BLOCK_HALF, x + BLOCK_HALF), (y - BLOCK_HALF, y + BLOCK_HALF)
    if camera.oblique:  # the front face is visible only from the tilted camera
        _fill_front_face(image, camera, xs, y - BLOCK_HALF, (z, z + BLOCK_HEIGHT), (colour * 0.7).astype(np.uint8))
    _fill_box_face(image, camera, xs, ys, z + BLOCK_HEIGHT, colour)


def _draw_gripper(image: np.ndarray, camera: Camera, scene: Scene) -> None:
    """Two fingers whose gap shows the opening, under a palm bar (and an arm in the tilted view)."""
    x, y, z = scene.gripper_pos
    gap = 0.008 + 0.022 * scene.gripper_opening
    palm_x = (x - gap - FINGER_WIDTH, x + gap + FINGER_WIDTH)
    if camera.oblique:  # an arm rising out of view above the palm makes the gripper easy to spot
        top = z + FINGER_LENGTH + PALM_HEIGHT
        _fill_front_face(image, camera, (x - 0.008, x + 0.008), y - 0.006, (top, Z_MAX + 1.0), ARM)
        _fill_front_face(image, camera, palm_x, y - 0.006, (z + FINGER_LENGTH, top), PALM)
        for side in (-1, 1):
            finger_x = (x + side * gap - FINGER_WIDTH / 2, x + side * gap + FINGER_WIDTH / 2)
            _fill_front_face(image, camera, finger_x, y - 0.01, (z, z + FINGER_LENGTH), FINGER)
    else:
        _fill_box_face(image, camera, palm_x, (y - 0.004, y + 0.004), z + FINGER_LENGTH, PALM)
        for side in (-1, 1):
            finger_x = (x + side * gap - FINGER_WIDTH / 2, x + side * gap + FINGER_WIDTH / 2)
            _fill_box_face(image, camera, finger_x, (y - 0.01, y + 0.01), z, FINGER)


def _fill_box_face(image: np.ndarray, camera: Camera, xs: tuple, ys: tuple, z: float, colour: np.ndarray) -> None:
    """Horizontal rectangle [xs] x [ys] at height z."""
    size = image.shape[0]
    u0, v1 = camera.to_pixels(xs[0], ys[0], z, size)
    u1, v0 = camera.to_pixels(xs[1], ys[1], z, size)
    _fill_pixels(image, u0, v0, u1, v1, colour)


def _fill_front_face(image: np.ndarray, camera: Camera, xs: tuple, y: float, zs: tuple, colour: np.ndarray) -> None:
    """Vertical rectangle [xs] x [zs] facing the camera at depth y."""
    size = image.shape[0]
    u0, v1 = camera.to_pixels(xs[0], y, zs[0], size)
    u1, v0 = camera.to_pixels(xs[1], y, zs[1], size)
    _fill_pixels(image, u0, v0, u1, v1, colour)


def _fill_pixels(image: np.ndarray, u0: float, v0: float, u1: float, v1: float, colour: np.ndarray) -> None:
    size = image.shape[0]
    c0, c1 = max(int(round(u0)), 0), min(int(round(u1)), size)
    r0, r1 = max(int(round(v0)), 0), min(int(round(v1)), size)
    if c0 < c1 and r0 < r1:
        for channel in range(3):  # scalar fills per channel are ~7x faster than broadcasting RGB
            image[r0:r1, c0:c1, channel] = colour[channel]


@lru_cache(maxsize=8)
def _solid_image(size: int, colour: tuple[int, int, int]) -> np.ndarray:
    """A cached one-colour image; copying it is far cheaper than filling a new one."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    for channel in range(3):
        image[..., channel] = colour[channel]
    image.flags.writeable = False
    return image


def _disc_mask(image: np.ndarray, camera: Camera, centre: np.ndarray, radius: float):
    """Bounding-box slices and mask of a disc on the table (the oblique view does not foreshorten)."""
    size = image.shape[0]
    u, v = camera.to_pixels(centre[0], centre[1], 0.0, size)
    r = radius * size / (2 * camera.half_extent)
    r0, r1 = max(int(v - r), 0), min(int(v + r) + 2, size)
    c0, c1 = max(int(u - r), 0), min(int(u + r) + 2, size)
    if r0 >= r1 or c0 >= c1:
        return None
    rows, cols = np.ogrid[r0:r1, c0:c1]
    mask = (rows + 0.5 - v) ** 2 + (cols + 0.5 - u) ** 2 <= r * r
    return (slice(r0, r1), slice(c0, c1)), mask


def _fill_disc(image: np.ndarray, camera: Camera, centre: np.ndarray, radius: float, colour: np.ndarray) -> None:
    found = _disc_mask(image, camera, centre, radius)
    if found is not None:
        window, mask = found
        image[window][mask] = colour


def _shade_disc(image: np.ndarray, camera: Camera, centre: np.ndarray, radius: float, alpha: float) -> None:
    found = _disc_mask(image, camera, centre, radius)
    if found is not None:
        window, mask = found
        patch = image[window]
        patch[mask] = (patch[mask] * (1 - alpha)).astype(np.uint8)
