"""Eval image preprocessing against OpenVLA's TensorFlow ops (TF only in this test, never in eval)."""

from __future__ import annotations

import numpy as np
import pytest

from vla.contract.images import center_crop, jpeg_roundtrip, lanczos_resize, resize_like_openvla


def _scene(size: int = 256) -> np.ndarray:
    """A smooth image with edges, like a rendered scene (JPEG-friendly, not noise)."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([x, y, (x + y) / 2], axis=-1) * 200
    image[size // 4: size // 2, size // 3: size // 2] = [250, 30, 30]
    return image.astype(np.uint8)


def test_shapes_and_bad_input():
    image = _scene()
    assert resize_like_openvla(image).shape == (224, 224, 3)
    assert center_crop(resize_like_openvla(image)).shape == (224, 224, 3)
    np.testing.assert_array_equal(lanczos_resize(image[:224, :224], 224), image[:224, :224])  # no-op at size
    with pytest.raises(ValueError, match="uint8"):
        jpeg_roundtrip(image.astype(np.float32))
    with pytest.raises(ValueError, match="area"):
        center_crop(image, area=1.5)


def test_center_crop_zooms_on_the_centre():
    image = np.zeros((224, 224, 3), np.uint8)
    image[:5] = 255  # a top border that the 0.9-area crop (about 5.7 px per side) cuts away
    image[100:124, 100:124] = 255
    cropped = center_crop(image)
    assert cropped[:3].max() == 0 and cropped[112, 112].min() == 255
    np.testing.assert_array_equal(center_crop(image, area=1.0), image)


def test_matches_tensorflow_within_a_few_levels():
    tf = pytest.importorskip("tensorflow")
    image = _scene()
    tf_jpeg = tf.io.decode_image(tf.image.encode_jpeg(image), expand_animations=False, dtype=tf.uint8).numpy()
    tf_img = tf.image.resize(tf_jpeg, (224, 224), method="lanczos3", antialias=True)
    tf_img = tf.cast(tf.clip_by_value(tf.round(tf_img), 0, 255), tf.uint8).numpy()
    resize_diff = np.abs(lanczos_resize(tf_jpeg, 224).astype(int) - tf_img.astype(int))
    assert resize_diff.max() <= 1 and resize_diff.mean() < 0.01  # same Lanczos-3 kernel, float rounding only
    diff = np.abs(resize_like_openvla(image).astype(int) - tf_img.astype(int))
    assert diff.mean() < 1.5 and diff.max() <= 8  # the JPEG codecs differ slightly (measured: mean 0.95, max 5)

    side = np.sqrt(0.9)
    box = [[(1 - side) / 2, (1 - side) / 2, (1 + side) / 2, (1 + side) / 2]]
    tf_crop = tf.image.crop_and_resize(tf.image.convert_image_dtype(tf_img, tf.float32)[None], box, [0], (224, 224))[0]
    tf_crop = tf.image.convert_image_dtype(tf.clip_by_value(tf_crop, 0, 1), tf.uint8, saturate=True).numpy()
    assert np.abs(center_crop(tf_img).astype(int) - tf_crop.astype(int)).max() <= 1  # float32 rounding only
