"""The ``/act`` wire format, shared by the server and the robot-side client (numpy + json only).

OpenVLA ``deploy.py`` payloads (json_numpy) are decoded without trust.

Clients encode arrays the way ``json_numpy`` does: ``{"__numpy__": <base64 bytes>, "dtype": <numpy
descr>, "shape": [...]}``. We encode and decode that ourselves instead of calling ``json_numpy.patch()``
so nothing monkey-patches ``json``, the server never builds object arrays (which could unpickle) and
checks sizes before allocating anything, and the robot-side client needs only numpy and requests.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

API_KEY_HEADER = "X-API-Key"
NUMPY_TAG = "__numpy__"
NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: nothing that can hold Python objects
MAX_INSTRUCTION_CHARS = 2048  # far above any real task description; bounds tokenization work
MAX_PROPRIO_DIM = 256  # far above any robot state; bounds what a request can make the server normalize
# OpenVLA-OFT's deploy.py names: the primary image as "full_image", the proprio state as "state".
FIELD_ALIASES = {"image": "full_image", "proprio": "state"}


class PayloadError(ValueError):
    """A request the client got wrong; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ActRequest:
    """One validated ``/act`` request."""

    image: np.ndarray  # uint8 [H, W, 3]
    instruction: str
    unnorm_key: str | None
    plain_lists: bool = False  # the image came as nested lists: answer with a plain list too
    double_encoded: bool = False  # OpenVLA's {"encoded": ...} form: answer double-encoded too
    wrist_image: np.ndarray | None = None  # uint8 [H, W, 3], for models with a wrist view
    proprio: np.ndarray | None = None  # float64 [P], finite: the raw (un-normalized) robot state


def encode_action(action: np.ndarray, plain_lists: bool = False, double_encoded: bool = False) -> str:
    """The ``/act`` answer, as OpenVLA's ``deploy.py`` gives it: json_numpy, or for a double-encoded request
    that json_numpy text as a JSON string (``JSONResponse(json_numpy.dumps(action))``); a plain list of
    floats for a client that sent its image as plain lists (no json_numpy on its side). ``action`` is
    one action [D] or a chunk [K, D] (nested lists when plain)."""
    if plain_lists:
        return json.dumps(np.asarray(action).tolist())
    return json.dumps(dumps(action)) if double_encoded else dumps(action)


def _decode_array(tagged: dict[str, Any], max_bytes: int) -> np.ndarray:
    """Rebuild a json_numpy array, refusing object dtypes and sizes that do not add up."""
    descr, shape, data = tagged.get("dtype"), tagged.get("shape"), tagged[NUMPY_TAG]
    if not isinstance(descr, str) or not isinstance(data, str):
        raise PayloadError("json_numpy array needs a string 'dtype' and base64 string '__numpy__'")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise PayloadError(f"json_numpy array 'shape' must be a list of non-negative ints, got {shape!r}")
    try:
        dtype = np.dtype(descr)
    except TypeError as err:
        raise PayloadError(f"Unknown array dtype {descr!r}") from err
    if dtype.kind not in NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None:
        raise PayloadError(f"Array dtype {descr!r} is not allowed; send plain numeric arrays (image: uint8)")
    expected = math.prod(shape) * dtype.itemsize  # exact ints: no overflow
    if expected > max_bytes or len(data) > 4 * (max_bytes // 3 + 1):
        raise PayloadError(f"Array of shape {shape} and dtype {descr} is larger than the {max_bytes}-byte limit", 413)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise PayloadError("json_numpy array data is not valid base64") from err
    if len(raw) != expected:
        raise PayloadError(f"json_numpy array has {len(raw)} bytes but shape {shape} x {descr} needs {expected}")
    array = np.frombuffer(raw, dtype=dtype)
    return array.reshape(shape) if shape else array[0]


def loads(text: str | bytes, max_array_bytes: int) -> Any:
    """``json.loads`` that also decodes json_numpy arrays (bounded by ``max_array_bytes`` each)."""

    def hook(obj: dict[str, Any]) -> Any:
        return _decode_array(obj, max_array_bytes) if NUMPY_TAG in obj else obj

    try:
        return json.loads(text, object_hook=hook)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PayloadError(f"Body is not valid JSON: {err}", 400) from err
    except RecursionError as err:
        raise PayloadError("Body JSON is nested too deeply", 400) from err


def _encode_array(value: Any) -> dict[str, Any]:
    """``json.dumps`` ``default``: a numpy array or scalar exactly as ``json_numpy`` encodes it."""
    if not isinstance(value, np.ndarray | np.generic):
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    array = np.asarray(value)
    return {NUMPY_TAG: base64.b64encode(array.tobytes()).decode(), "dtype": array.dtype.str, "shape": list(array.shape)}


def dumps(value: Any) -> str:
    """JSON with numpy arrays json_numpy-encoded: what OpenVLA's patched clients decode."""
    return json.dumps(value, default=_encode_array)


def parse_act_payload(body: bytes, max_image_side: int) -> ActRequest:
    """Validate an ``/act`` body, including OpenVLA's double-encoded ``{"encoded": "<json>"}`` form."""
    max_array_bytes = max_image_side * max_image_side * 3
    payload = loads(body, max_array_bytes)
    double_encoded = isinstance(payload, dict) and "encoded" in payload
    if double_encoded:
        if set(payload) != {"encoded"} or not isinstance(payload["encoded"], str):
            raise PayloadError("A double-encoded payload must be exactly {'encoded': '<json string>'}")
        payload = loads(payload["encoded"], max_array_bytes)
    if not isinstance(payload, dict):
        raise PayloadError(f"Body must be a JSON object, got {type(payload).__name__}")
    payload = _resolve_aliases(payload)
    missing = [name for name in ("image", "instruction") if name not in payload]
    if missing:
        raise PayloadError(f"Missing required field(s) {missing}")
    wrist_image, proprio = payload.get("wrist_image"), payload.get("proprio")
    return ActRequest(
        image=_check_image(payload["image"], max_image_side),
        instruction=_check_instruction(payload["instruction"]),
        unnorm_key=_check_unnorm_key(payload.get("unnorm_key")),
        plain_lists=isinstance(payload["image"], list),
        double_encoded=double_encoded,
        wrist_image=None if wrist_image is None else _check_image(wrist_image, max_image_side, "wrist_image"),
        proprio=None if proprio is None else _check_proprio(proprio),
    )


def _resolve_aliases(payload: dict[str, Any]) -> dict[str, Any]:
    """OpenVLA-OFT's field names under ours; a request giving both names of one field is ambiguous."""
    payload = dict(payload)
    for name, alias in FIELD_ALIASES.items():
        if alias in payload:
            if name in payload:
                raise PayloadError(f"Send either {name!r} or {alias!r} (OpenVLA-OFT's name for it), not both")
            payload[name] = payload.pop(alias)
    return payload


IMAGE_EXAMPLES = (
    "Working requests (img: uint8 numpy array [H, W, 3]):\n"
    '  json_numpy.patch(); requests.post(url + "/act", json={"image": img, "instruction": "pick up the cup"})\n'
    '  requests.post(url + "/act", json={"image": img.tolist(), "instruction": "pick up the cup"})'
)


def _check_image(image: Any, max_image_side: int, name: str = "image") -> np.ndarray:
    """A json_numpy uint8 array, or a plain nested list of 0-255 integers (what ``img.tolist()`` sends)."""
    if isinstance(image, list):
        image = _image_from_lists(image, name)
    if not isinstance(image, np.ndarray):
        raise PayloadError(f"'{name}' must be a json_numpy uint8 array or a nested list [H][W][3] of 0-255 integers, "
                           f"got {type(image).__name__}.\n{IMAGE_EXAMPLES}")
    if image.dtype != np.uint8:
        raise PayloadError(f"'{name}' must have dtype uint8, got {image.dtype}.\n{IMAGE_EXAMPLES}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise PayloadError(f"'{name}' must have shape [H, W, 3] (RGB), got {list(image.shape)}.\n{IMAGE_EXAMPLES}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise PayloadError(f"'{name}' is empty: shape {list(image.shape)}")
    if max(height, width) > max_image_side:
        raise PayloadError(f"'{name}' is {height}x{width}; the largest side allowed is {max_image_side}", 413)
    return image


def _image_from_lists(rows: list, name: str) -> np.ndarray:
    """A nested list of JSON integers 0..255 as a uint8 array; anything else (floats, bools, ragged rows) is refused."""
    try:
        array = np.array(rows)
    except ValueError as err:  # ragged nesting
        raise PayloadError(f"'{name}' as a nested list must be rectangular [H][W][3] ({err}).\n{IMAGE_EXAMPLES}") from err
    if array.dtype.kind not in "iu":
        raise PayloadError(f"'{name}' as a nested list must hold integers 0-255, got {array.dtype.name} values.\n"
                           f"{IMAGE_EXAMPLES}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise PayloadError(f"'{name}' values must be in 0..255, got {array.min()}..{array.max()}")
    return array.astype(np.uint8)


def _check_proprio(proprio: Any) -> np.ndarray:
    """The raw robot state: a 1-D json_numpy int/float array or a plain list of JSON numbers, all finite.

    Booleans are refused (a flag is no joint position); NaN/inf would poison the normalized input.
    """
    if isinstance(proprio, list):
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in proprio):
            raise PayloadError("'proprio' as a list must hold JSON numbers only (one per state dimension)")
        proprio = np.array(proprio, dtype=np.float64)
    if not isinstance(proprio, np.ndarray) or proprio.dtype.kind not in "iuf":
        kind = proprio.dtype if isinstance(proprio, np.ndarray) else type(proprio).__name__
        raise PayloadError(f"'proprio' (or 'state') must be a 1-D json_numpy float array or a list of numbers, got {kind}")
    if proprio.ndim != 1 or proprio.size == 0:
        raise PayloadError(f"'proprio' must be a non-empty 1-D array [P], got shape {list(proprio.shape)}")
    if proprio.size > MAX_PROPRIO_DIM:
        raise PayloadError(f"'proprio' has {proprio.size} values; at most {MAX_PROPRIO_DIM} allowed", 413)
    proprio = proprio.astype(np.float64)
    if not np.all(np.isfinite(proprio)):
        raise PayloadError(f"'proprio' contains NaN/inf: {proprio.tolist()}")
    return proprio


def _check_text(name: str, text: str) -> str:
    """``text`` if it encodes as UTF-8: a JSON escape like ``\\ud800`` decodes to a lone surrogate, on which
    the tokenizer raises deep inside a (batched) model call."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise PayloadError(f"'{name}' is not valid Unicode: lone surrogate at character {err.start}") from err
    return text


def _check_instruction(instruction: Any) -> str:
    if not isinstance(instruction, str):
        raise PayloadError(f"'instruction' must be a string, got {type(instruction).__name__}")
    if not instruction.strip():
        raise PayloadError("'instruction' is empty")
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise PayloadError(f"'instruction' has {len(instruction)} characters; at most {MAX_INSTRUCTION_CHARS} allowed", 413)
    return _check_text("instruction", instruction)


def _check_unnorm_key(unnorm_key: Any) -> str | None:
    if unnorm_key is not None and not isinstance(unnorm_key, str):
        raise PayloadError(f"'unnorm_key' must be a string or null, got {type(unnorm_key).__name__}")
    return unnorm_key if unnorm_key is None else _check_text("unnorm_key", unnorm_key)
