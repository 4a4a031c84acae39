"""Training frames are OpenVLA's, pixel for pixel: TF's JPEG decoder + dlimp's Lanczos resize, then Prismatic's transform.

OpenVLA's frame (``obs_transforms.decode_and_resize``): ``tf.io.decode_image(..., dtype=uint8)``,
``tf.image.resize(lanczos3, antialias=True)`` to the backbone's S x S, ``round``, clip, cast to
uint8; then (after augmentation) Prismatic's image transform on that PIL image. The TF side of
these tests runs TensorFlow's own ops; our side runs the DataModule's sample decoder.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from vla.contract.image_transform import ImageTransform
from vla.contract.images import decode_jpeg
from vla.data.datamodule import _SampleDecoder
from vla.data.shards import CorruptShardError


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients, an edge and some noise: JPEG artefacts and Lanczos ringing both matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 / width, y * 255 / height, (x + y) % 97 * 2.5], axis=-1)
    image[height // 3: height // 2, width // 4: width // 2] = [240, 20, 30]
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def _pil_jpeg(image: np.ndarray, quality: int = 95, subsampling: str = "4:2:0", mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).convert(mode).save(out, format="JPEG", quality=quality, subsampling=subsampling)
    return out.getvalue()


def _decoder(strategy: str = "resize-naive", crop_pct: float = 1.0, size: int = 224) -> _SampleDecoder:
    """The DataModule's sample decoder around a backbone transform (``_image`` needs nothing else of the processor)."""
    transform = ImageTransform(size, [(0.5, 0.5, 0.5)], [(0.5, 0.5, 0.5)], resize_strategy=strategy, crop_pct=crop_pct)
    return _SampleDecoder(SimpleNamespace(image_transform=transform), bounded_dims={})


def _openvla_frame(tf, jpeg: bytes, size: int = 224) -> np.ndarray:
    image = tf.io.decode_image(jpeg, expand_animations=False, dtype=tf.uint8)
    image = tf.image.resize(image, (size, size), method="lanczos3", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8).numpy()


@pytest.mark.parametrize(("shape", "quality", "subsampling"), [((64, 64), 95, "4:2:0"), ((256, 256), 90, "4:2:0"),
                                                               ((33, 47), 75, "4:2:2"), ((180, 320), 95, "4:4:4")])
def test_decode_jpeg_is_tensorflows(shape, quality, subsampling):
    tf = pytest.importorskip("tensorflow")
    jpeg = _pil_jpeg(_photo(*shape), quality, subsampling)
    expected = tf.io.decode_jpeg(jpeg).numpy()
    np.testing.assert_array_equal(decode_jpeg(jpeg), expected)
    np.testing.assert_array_equal(decode_jpeg(jpeg), tf.io.decode_image(jpeg, expand_animations=False).numpy())
    tf_encoded = tf.image.encode_jpeg(_photo(*shape)).numpy()
    np.testing.assert_array_equal(decode_jpeg(tf_encoded), tf.io.decode_jpeg(tf_encoded).numpy())


def test_damaged_scan_data_decodes_like_tensorflow():
    """libjpeg only warns about damaged entropy-coded data; TF decodes through it, and so do we, to its pixels."""
    tf = pytest.importorskip("tensorflow")
    data = bytearray(_pil_jpeg(_photo(128, 128)))
    for i in range(len(data) // 2, len(data) // 2 + 64):
        if 0xFF not in (data[i], data[i] ^ 0xFF, data[i - 1]):
            data[i] ^= 0xFF
    np.testing.assert_array_equal(decode_jpeg(bytes(data)), tf.io.decode_jpeg(bytes(data)).numpy())


@pytest.mark.parametrize(("data", "reason"), [
    (_pil_jpeg(_photo(32, 32), mode="L"), "Gray JPEG"),
    (_pil_jpeg(_photo(32, 32), mode="CMYK"), "not a readable colour JPEG"),  # libjpeg-turbo's header reader refuses it
    (b"not an image", "not a readable colour JPEG"),
    (_pil_jpeg(_photo(64, 64))[:-200], "Premature end"),  # truncated: TF refuses it too
], ids=["gray", "cmyk", "garbage", "truncated"])
def test_decode_jpeg_refuses_what_the_model_cannot_take(data, reason):
    with pytest.raises(ValueError, match=reason):
        decode_jpeg(data)


def test_a_bad_image_in_a_shard_names_shard_and_key(tiny_vla):
    raw = {"__key__": "000003_0002", "__shard__": "/data/droid/train-000007.tar", "dataset_name": "sim",
           "action.npy": _npy(np.zeros(7, np.float32)), "instruction.txt": b"pick",
           "image_primary.jpg": _pil_jpeg(_photo(32, 32), mode="L")}
    decoder = _SampleDecoder(tiny_vla.processor, {"sim": np.zeros(7, bool)})
    with pytest.raises(CorruptShardError, match=r"'000003_0002' in shard /data/droid/train-000007\.tar.*Gray JPEG"):
        decoder(raw)


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


@pytest.mark.parametrize("shape", [(64, 64), (256, 256), (180, 320), (480, 640), (224, 224)])
@pytest.mark.parametrize("strategy", ["resize-naive", "letterbox"])
def test_training_frame_is_openvlas(shape, strategy):
    tf = pytest.importorskip("tensorflow")
    jpeg = _pil_jpeg(_photo(*shape, seed=shape[0]))
    np.testing.assert_array_equal(_decoder(strategy)._image(jpeg, None), _openvla_frame(tf, jpeg))


def test_resize_crop_runs_prismatics_transform_on_openvlas_frame():
    """timm's resize + center crop (crop_pct < 1) comes after dlimp's resize, as in OpenVLA, not instead of it."""
    tf = pytest.importorskip("tensorflow")
    jpeg = _pil_jpeg(_photo(180, 320))
    decoder = _decoder("resize-crop", crop_pct=0.9)
    expected = np.asarray(decoder.processor.image_transform.resize(_openvla_frame(tf, jpeg)))
    np.testing.assert_array_equal(decoder._image(jpeg, None), expected)


def test_training_frame_is_openvlas_on_the_bridge_sample(bridge_rlds_dir):
    tf = pytest.importorskip("tensorflow")
    files = sorted(str(f) for f in (bridge_rlds_dir / "bridge_dataset" / "1.0.0").glob("bridge_dataset-train.tfrecord-*"))
    decoder, frames = _decoder(), 0
    for record in tf.data.TFRecordDataset(files):
        features = tf.train.Example.FromString(record.numpy()).features.feature
        for jpeg in features["steps/observation/image_0"].bytes_list.value:
            np.testing.assert_array_equal(decoder._image(jpeg, None), _openvla_frame(tf, jpeg))
            frames += 1
    assert frames > 100
