"""The wire protocol between a policy server and a robot (docs/protocol.md): msgpack maps over websocket
binary frames, numpy arrays as ``{"__nd__": 1, "dtype", "shape", "data"}``, images raw uint8 or JPEG.

numpy and msgpack only (Pillow for JPEG, imported when an image is JPEG): the robot side imports this without
torch. Every decoder here assumes its input is hostile: a declared shape must match the bytes that came, only
plain numeric dtypes pass (never ``object``), nesting and sizes are bounded, and every refusal is a
:class:`ProtocolError` with a code and a message that says what was expected and what arrived.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from vlaforge.types import EMBODIMENT, OBS_STATE, TASK, image_key

#: bumped on any change a peer of the previous version would misread; both sides refuse another version
PROTOCOL_VERSION = 1
#: the websocket subprotocol both sides name in the handshake
SUBPROTOCOL = "vlaforge.v1"
#: the header that carries the token (``Authorization: Bearer <token>``)
AUTH_HEADER = "Authorization"

#: dtypes an array may have on the wire (little-endian); anything else, ``object`` above all, is refused
DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64")
MAX_NDIM = 4
MAX_TASK_CHARS = 1_000
#: keys a request's observation may have besides the cameras and the state
OPTIONAL_KEYS = (TASK, EMBODIMENT, "timestamp")
IMAGE_ENCODINGS = ("raw", "jpeg")

_ND, _JPEG = "__nd__", "__jpeg__"
_DTYPES = {np.dtype(d).newbyteorder("<") if np.dtype(d).itemsize > 1 else np.dtype(d) for d in DTYPES}


class ProtocolError(ValueError):
    """A message that breaks the protocol. ``code`` names the kind (``bad_message``, ``bad_array``,
    ``bad_observation``, ``unknown_embodiment``, ``bad_image``, ``too_large``, ``version``, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def read_token(path: str) -> str:
    """The token in ``path`` (its first line, stripped); an empty or unreadable file is an error."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--token-file: expected a file holding the token, got {path!r} "
                                f"(no such file)")
    text = p.read_text().strip()
    token = text.splitlines()[0].strip() if text else ""
    if len(token) < 8:
        raise ValueError(f"--token-file {path!r}: expected a token of at least 8 characters on its first "
                         f"line, got {len(token)}")
    return token


# -- arrays --------------------------------------------------------------------------------------------------
def encode_array(a: np.ndarray) -> dict[str, Any]:
    """A numpy array as a msgpack-ready map (C order, little-endian)."""
    a = np.asarray(a)
    dt = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
    if dt not in _DTYPES:
        raise ProtocolError("bad_array", f"array dtype: expected one of {list(DTYPES)}, got {a.dtype}")
    return {_ND: 1, "dtype": dt.str, "shape": list(a.shape),
            "data": np.ascontiguousarray(a, dtype=dt).tobytes()}


def decode_array(m: Mapping[str, Any], name: str = "array") -> np.ndarray:
    """The array a map from :func:`encode_array` describes, validated before anything is allocated."""
    dtype, shape, data = m.get("dtype"), m.get("shape"), m.get("data")
    if set(m) != {_ND, "dtype", "shape", "data"}:
        raise ProtocolError("bad_array", f"{name}: expected keys {[_ND, 'dtype', 'shape', 'data']}, "
                                         f"got {sorted(map(str, m))}")
    if not isinstance(dtype, str):
        raise ProtocolError("bad_array", f"{name}: dtype: expected a str, got {type(dtype).__name__}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ProtocolError("bad_array", f"{name}: dtype: expected one of {list(DTYPES)}, "
                                         f"got {dtype[:40]!r}") from None
    if dt not in _DTYPES or (dt.itemsize > 1 and dt.byteorder == ">"):
        raise ProtocolError("bad_array", f"{name}: dtype: expected one of {list(DTYPES)} (little-endian), "
                                         f"got {dtype[:40]!r}")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise ProtocolError("bad_array", f"{name}: shape: expected a list of at most {MAX_NDIM} "
                                         f"non-negative ints, got {str(shape)[:80]}")
    if not isinstance(data, bytes):
        raise ProtocolError("bad_array", f"{name}: data: expected bytes, got {type(data).__name__}")
    need = math.prod(shape) * dt.itemsize  # Python ints: a huge declared shape cannot overflow
    if need != len(data):
        raise ProtocolError("bad_array", f"{name}: shape {shape} of {dt} needs {need} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dt).reshape(shape)


# -- messages ------------------------------------------------------------------------------------------------
def _default(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return encode_array(x)
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"cannot put a {type(x).__name__} on the wire (expected numbers, str, bytes, lists, "
                    f"maps, numpy arrays)")


def pack(message: Mapping[str, Any]) -> bytes:
    """A message (a map; numpy arrays anywhere inside) as msgpack bytes."""
    return msgpack.packb(message, default=_default, use_bin_type=True)


def _restore(x: Any, depth: int = 0) -> Any:
    if depth > 8:
        raise ProtocolError("bad_message", "message nests deeper than 8 levels")
    if isinstance(x, dict):
        if _ND in x:
            return decode_array(x)
        return {k: _restore(v, depth + 1) for k, v in x.items()}
    if isinstance(x, list):
        return [_restore(v, depth + 1) for v in x]
    return x


def unpack(data: bytes | str, max_bytes: int | None = None) -> dict[str, Any]:
    """msgpack bytes -> a message map with its arrays decoded; anything malformed is a
    :class:`ProtocolError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("bad_message", f"expected a binary frame (msgpack), got {type(data).__name__}")
    if max_bytes is not None and len(data) > max_bytes:
        raise ProtocolError("too_large", f"message of {len(data)} bytes: the limit is {max_bytes}")
    try:
        m = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, use_list=True,
                            max_ext_len=0, max_array_len=1_000, max_map_len=1_000)
    except Exception as e:  # noqa: BLE001
        # ExtraData, FormatError, StackError, ValueError, UnicodeDecodeError...
        raise ProtocolError("bad_message", f"not a msgpack message "
                                           f"({type(e).__name__}: {str(e)[:100]})") from None
    if not isinstance(m, dict):
        raise ProtocolError("bad_message", f"expected a msgpack map, got {type(m).__name__}")
    if not all(isinstance(k, str) for k in m):
        raise ProtocolError("bad_message", "map keys must be str")
    return _restore(m)


def message_type(m: Mapping[str, Any], allowed: tuple[str, ...]) -> str:
    t = m.get("type")
    if t not in allowed:
        raise ProtocolError("bad_message", f"type: expected one of {list(allowed)}, got {str(t)[:40]!r}")
    return t


# -- images --------------------------------------------------------------------------------------------------
def encode_image(image: np.ndarray, encoding: str = "raw", quality: int = 90) -> Any:
    """An upright uint8 (H, W, 3) image as it goes on the wire: the array itself, or
    ``{"__jpeg__": bytes}``."""
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"image encoding: expected one of {list(IMAGE_ENCODINGS)}, got {encoding!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if encoding == "raw":
        return image
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    return {_JPEG: buf.getvalue()}


def decode_image(value: Any, size: int, key: str) -> np.ndarray:
    """A wire image -> uint8 (size, size, 3); a JPEG's declared size is checked before it is decoded."""
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.shape != (size, size, 3):
            raise ProtocolError("bad_image", f"{key}: expected uint8 ({size}, {size}, 3), got {value.dtype} "
                                             f"{value.shape}")
        return value.copy()  # the wire's buffer is read-only
    if isinstance(value, dict) and set(value) == {_JPEG} and isinstance(value[_JPEG], bytes):
        from PIL import Image, UnidentifiedImageError

        try:
            im = Image.open(io.BytesIO(value[_JPEG]), formats=["JPEG"])
            if im.size != (size, size):  # read from the header: nothing decoded yet
                raise ProtocolError("bad_image", f"{key}: expected a {size}x{size} JPEG, got {im.size[0]}x"
                                                 f"{im.size[1]}")
            out = np.array(im.convert("RGB"))
        except ProtocolError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise ProtocolError("bad_image", f"{key}: not a readable JPEG ({str(e)[:80]})") from None
        return out
    raise ProtocolError("bad_image", f"{key}: expected a uint8 array or {{'{_JPEG}': bytes}}, got "
                                     f"{type(value).__name__}")


# -- observations --------------------------------------------------------------------------------------------
def encode_observation(obs: Mapping[str, Any], cameras: tuple[str, ...] | list[str], encoding: str = "raw",
                       quality: int = 90) -> dict[str, Any]:
    """A frame dict (DESIGN keys) as a request's ``obs``: cameras encoded, the state as float32, the rest
    as is."""
    out: dict[str, Any] = {}
    cams = {image_key(c) for c in cameras}
    for k, v in obs.items():
        if k in cams:
            out[k] = encode_image(v, encoding, quality)
        elif k == OBS_STATE:
            out[k] = np.asarray(v, dtype=np.float32)
        elif k in OPTIONAL_KEYS:
            out[k] = v
    return out


def validate_observation(obs: Any, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A request's ``obs`` checked against the server's metadata -> a frame dict the policy takes
    (images decoded, the embodiment filled in when the policy has one). Raises :class:`ProtocolError`."""
    if not isinstance(obs, dict):
        raise ProtocolError("bad_observation", f"obs: expected a map, got {type(obs).__name__}")
    embodiments = metadata["embodiments"]
    emb = obs.get(EMBODIMENT)
    if emb is None:
        if len(embodiments) != 1:
            raise ProtocolError("unknown_embodiment", f"{EMBODIMENT}: missing; this policy serves "
                                                      f"{sorted(embodiments)}")
        emb = next(iter(embodiments))
    if not isinstance(emb, str) or emb not in embodiments:
        raise ProtocolError("unknown_embodiment", f"{EMBODIMENT}: expected one of {sorted(embodiments)}, got "
                                                  f"{str(emb)[:40]!r}")
    # the robot's own camera names where the policy knows them (a policy trained on several robots)
    size = int(metadata["image_size"])
    cams = [image_key(c) for c in embodiments[emb].get("cameras") or metadata["cameras"]]
    allowed = {*cams, OBS_STATE, *OPTIONAL_KEYS}
    unknown = sorted(str(k) for k in obs if k not in allowed)
    if unknown:
        raise ProtocolError("bad_observation", f"obs: unexpected keys {unknown[:8]}; "
                                               f"expected {sorted(allowed)}")
    task = obs.get(TASK)
    if not isinstance(task, str) or not task.strip() or len(task) > MAX_TASK_CHARS:
        raise ProtocolError("bad_observation", f"{TASK}: expected the instruction as a non-empty str "
                                               f"of at most {MAX_TASK_CHARS} characters, "
                                               f"got {type(task).__name__}")
    p = int(embodiments[emb]["state_dim"])
    state = obs.get(OBS_STATE)
    if not isinstance(state, np.ndarray) or state.dtype.kind != "f" or state.shape != (p,):
        got = f"{state.dtype} {state.shape}" if isinstance(state, np.ndarray) else type(state).__name__
        raise ProtocolError("bad_observation", f"{OBS_STATE}: expected a float array of shape ({p},) for "
                                               f"{emb!r}, got {got}")
    if not np.isfinite(state).all():
        raise ProtocolError("bad_observation", f"{OBS_STATE}: not finite: {state.tolist()}")
    ts = obs.get("timestamp")
    if ts is not None and (not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts)):
        raise ProtocolError("bad_observation", f"timestamp: expected a finite number (seconds), "
                                               f"got {ts!r:.40}")
    frame: dict[str, Any] = {OBS_STATE: state.astype(np.float32), TASK: task, EMBODIMENT: emb}
    for key in cams:
        if key not in obs:
            raise ProtocolError("bad_observation", f"{key}: missing; the policy reads cameras {cams}")
        frame[key] = decode_image(obs[key], size, key)
    return frame


def infer_request(request_id: int, obs: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "infer", "id": int(request_id), "obs": dict(obs)}


def error_reply(request_id: Any, code: str, message: str) -> dict[str, Any]:
    rid = request_id if isinstance(request_id, int) and not isinstance(request_id, bool) else None
    return {"type": "error", "id": rid, "code": code, "message": message}
