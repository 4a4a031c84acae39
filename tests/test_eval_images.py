"""Eval image preprocessing against OpenVLA's TensorFlow ops, pixel for pixel (TF only in this test, never in eval)."""

from __future__ import annotations

import numpy as np
import pytest

from vla.contract.images import (
    center_crop,
    jpeg_roundtrip,
    lanczos3_weights,
    lanczos_resize,
    lanczos_resize_float,
    resize_like_openvla,
)


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
    assert lanczos_resize(image, (100, 60)).shape == (100, 60, 3)
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


def test_lanczos_weights_are_a_normalized_band():
    weights = lanczos3_weights(256, 224)
    assert weights.shape == (224, 256) and weights.dtype == np.float32
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    assert (np.count_nonzero(weights, axis=1) <= 9).all()  # 2 * ceil(3 * 256 / 224) + 1 taps when downsampling
    assert np.count_nonzero(lanczos3_weights(64, 224), axis=1).max() <= 7  # upsampling: the plain Lanczos-3 support
    image = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8).astype(np.float32)
    matmul = weights @ image @ weights.T  # the batched form: same weights, another summation order
    exact = lanczos_resize_float(np.repeat(image[..., None], 3, axis=-1), 224)[..., 0]
    assert np.abs(matmul - exact).max() < 1e-3


def _tf_resize(tf, image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """dlimp's ``resize_image``: the float result of ``tf.image.resize`` and the rounded uint8 frame."""
    resized = tf.image.resize(image, size, method="lanczos3", antialias=True)
    return resized.numpy(), tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()


@pytest.mark.parametrize(("shape", "size"), [((64, 64), (224, 224)), ((256, 256), (224, 224)), ((256, 320), (224, 224)),
                                             ((224, 224), (224, 224)), ((480, 640), (224, 224)), ((37, 91), (50, 13))])
def test_lanczos_resize_is_tensorflows(shape, size):
    tf = pytest.importorskip("tensorflow")
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    tf_float, tf_uint8 = _tf_resize(tf, image, size)
    np.testing.assert_array_equal(lanczos_resize_float(image, size), tf_float)  # bit for bit, before rounding
    np.testing.assert_array_equal(lanczos_resize(image, size), tf_uint8)


def test_lanczos_weights_are_tensorflows():
    tf = pytest.importorskip("tensorflow")
    for in_size, out_size in [(64, 224), (256, 224), (320, 224), (224, 224)]:
        deltas = np.eye(in_size, dtype=np.float32)[:, None, :]  # channel j: a unit impulse at row j
        tf_weights = tf.image.resize(deltas, (out_size, 1), method="lanczos3", antialias=True).numpy()[:, 0, :]
        np.testing.assert_array_equal(lanczos3_weights(in_size, out_size), tf_weights)


def test_eval_preprocessing_is_openvlas():
    tf = pytest.importorskip("tensorflow")
    image = _scene()
    # OpenVLA's experiments/robot resize_image: encode_jpeg, decode_image, dlimp's lanczos3 resize and cast
    decoded = tf.io.decode_image(tf.image.encode_jpeg(image), expand_animations=False, dtype=tf.uint8).numpy()
    np.testing.assert_array_equal(jpeg_roundtrip(image), decoded)
    _, tf_img = _tf_resize(tf, decoded, (224, 224))
    np.testing.assert_array_equal(resize_like_openvla(image), tf_img)

    side = tf.sqrt(tf.constant([0.9]))  # OpenVLA's crop_and_resize(crop_scale=0.9): box offset .. offset + side
    offset = (1 - side) / 2
    box = tf.stack([offset, offset, offset + side, offset + side], axis=1)
    tf_crop = tf.image.crop_and_resize(tf.image.convert_image_dtype(tf_img, tf.float32)[None], box, [0], (224, 224))[0]
    tf_crop = tf.image.convert_image_dtype(tf.clip_by_value(tf_crop, 0, 1), tf.uint8, saturate=True).numpy()
    np.testing.assert_array_equal(center_crop(tf_img), tf_crop)
