"""The wire format: every dtype round-trips bit for bit; everything malformed is refused with a code, before
any allocation its declared shape would need."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from vlaforge.serving.protocol import (
    DTYPES,
    ProtocolError,
    decode_image,
    encode_image,
    encode_observation,
    pack,
    read_token,
    unpack,
    validate_observation,
)

META = {"embodiments": {"sawyer": {"state_dim": 4, "action_dim": 4},
                        "aloha": {"state_dim": 14, "action_dim": 14}},
        "cameras": ["corner"], "image_size": 16}


def _frame(**over):
    f = {"observation.images.corner": np.zeros((16, 16, 3), np.uint8),
         "observation.state": np.zeros(4, np.float32),
         "task": "open the drawer", "embodiment": "sawyer"}
    return f | over


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 5), (2, 3, 4), (1, 2, 1, 3)])
def test_every_dtype_and_shape_round_trips(dtype, shape):
    rng = np.random.default_rng(0)
    a = np.asarray(rng.normal(size=shape) * 100).astype(dtype)
    back = unpack(pack({"type": "x", "a": a, "nested": {"b": [a, a]}}))
    for got in (back["a"], *back["nested"]["b"]):
        assert got.dtype == np.dtype(dtype) and got.shape == shape
        np.testing.assert_array_equal(got, a)


def test_big_endian_and_non_contiguous_arrays_arrive_as_little_endian_values():
    a = np.arange(12, dtype=">f4").reshape(3, 4).T  # big-endian, transposed
    got = unpack(pack({"a": a}))["a"]
    assert got.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(got, a)


@pytest.mark.parametrize("bad", [np.array([object()], dtype=object), np.array(["text"]), np.array([1 + 2j]),
                                 np.zeros(2, dtype=[("x", "f4")])])
def test_unsupported_dtypes_are_not_sent(bad):
    with pytest.raises(ProtocolError, match="dtype"):
        pack({"a": bad})


def _nd(dtype="<f4", shape=(2,), data=b"\0" * 8, **extra):
    return msgpack.packb({"a": {"__nd__": 1, "dtype": dtype, "shape": list(shape), "data": data, **extra}})


@pytest.mark.parametrize("raw, fragment", [
    (_nd(dtype="|O"), "dtype"),  # object arrays never decode
    (_nd(dtype=">f4"), "little-endian"),
    (_nd(dtype="<U4", data=b"\0" * 32), "dtype"),
    (_nd(dtype="not a dtype"), "dtype"),
    (_nd(dtype=7), "dtype"),
    (_nd(shape=(2**40, 2**40)), "needs"),  # a huge declared shape: refused from the byte count, nothing
                                           # allocated
    (_nd(shape=(-1,)), "shape"),
    (_nd(shape=(1, 1, 1, 1, 2)), "shape"),
    (_nd(shape=(3,)), "needs 12 bytes, got 8"),
    (_nd(data="text"), "data"),
    (_nd(extra=1), "keys"),
])
def test_malformed_arrays_are_refused(raw, fragment):
    with pytest.raises(ProtocolError, match=fragment) as e:
        unpack(raw)
    assert e.value.code == "bad_array"


@pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x92\x01", msgpack.packb({"a": 1})[:-1],
                                 msgpack.packb([1, 2]), msgpack.packb(3), "a text frame",
                                 msgpack.packb({1: 2}), msgpack.packb({"a": msgpack.ExtType(1, b"x")}),
                                 msgpack.packb({"a": 1}) + b"\x00"])
def test_malformed_messages_are_refused(raw):
    with pytest.raises(ProtocolError) as e:
        unpack(raw)
    assert e.value.code == "bad_message"


def test_deep_nesting_and_size_limits():
    deep: object = 1
    for _ in range(20):
        deep = [deep]
    with pytest.raises(ProtocolError, match="deeper"):
        unpack(msgpack.packb({"a": deep}))
    with pytest.raises(ProtocolError) as e:
        unpack(b"\x80" + b"\0" * 100, max_bytes=50)
    assert e.value.code == "too_large"


def test_images_raw_and_jpeg():
    y, x = np.mgrid[0:16, 0:16]
    im = np.stack([x * 15, y * 15, (x + y) * 7], -1).astype(np.uint8)  # smooth gradients: what JPEG
                                                                        # keeps well
    raw = unpack(pack({"i": encode_image(im, "raw")}))["i"]
    np.testing.assert_array_equal(decode_image(raw, 16, "k"), im)
    jpeg = unpack(pack({"i": encode_image(im, "jpeg", quality=95)}))["i"]
    back = decode_image(jpeg, 16, "k")
    assert back.shape == im.shape and back.dtype == np.uint8 and back.flags.writeable
    assert np.abs(back.astype(int) - im).mean() < 4  # lossy, close
    with pytest.raises(ProtocolError, match="16x16 JPEG, got 32x32"):  # checked from the header
        decode_image(encode_image(np.zeros((32, 32, 3), np.uint8), "jpeg"), 16, "k")
    with pytest.raises(ProtocolError, match="readable JPEG"):
        decode_image({"__jpeg__": b"\xff\xd8 definitely not"}, 16, "k")
    with pytest.raises(ProtocolError, match="uint8"):
        decode_image(np.zeros((16, 16, 3), np.float32), 16, "k")
    with pytest.raises(ValueError, match="encoding"):
        encode_image(im, "png")


def test_a_valid_observation_passes_and_fills_in_the_only_embodiment():
    f = validate_observation(unpack(pack({"o": encode_observation(_frame(), ["corner"])}))["o"], META)
    assert f["embodiment"] == "sawyer" and f["observation.state"].dtype == np.float32
    single = META | {"embodiments": {"sawyer": META["embodiments"]["sawyer"]}}
    f = _frame()
    del f["embodiment"]
    assert validate_observation(f, single)["embodiment"] == "sawyer"


@pytest.mark.parametrize("change, code, fragment", [
    (dict(embodiment="ur5e"), "unknown_embodiment", "ur5e"),
    (dict(embodiment=None), "unknown_embodiment", "missing"),
    (dict(task=""), "bad_observation", "task"),
    (dict(task=3), "bad_observation", "task"),
    (dict(task="x" * 5000), "bad_observation", "task"),
    ({"observation.state": np.zeros(3, np.float32)}, "bad_observation", "shape (4,)"),
    ({"observation.state": np.zeros(4, np.int32)}, "bad_observation", "float"),
    ({"observation.state": np.array([0, np.nan, 0, 0], np.float32)}, "bad_observation", "finite"),
    ({"observation.state": [0.0] * 4}, "bad_observation", "list"),
    ({"observation.images.corner": np.zeros((8, 8, 3), np.uint8)}, "bad_image", "(16, 16, 3)"),
    ({"observation.images.corner": "pixels"}, "bad_image", "str"),
    ({"observation.images.top": np.zeros((16, 16, 3), np.uint8)}, "bad_observation", "unexpected keys"),
    (dict(timestamp="now"), "bad_observation", "timestamp"),
])
def test_bad_observations_name_what_was_expected(change, code, fragment):
    f = _frame(**change)
    if change.get("embodiment", "") is None:
        del f["embodiment"]
    with pytest.raises(ProtocolError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as e:
        validate_observation(f, META)
    assert e.value.code == code


def test_a_missing_camera_is_refused():
    f = _frame()
    del f["observation.images.corner"]
    with pytest.raises(ProtocolError, match="missing"):
        validate_observation(f, META)


def test_token_file(tmp_path):
    (tmp_path / "t").write_text("  s3cret-token-value \nsecond line ignored\n")
    assert read_token(str(tmp_path / "t")) == "s3cret-token-value"
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ValueError, match="at least 8"):
        read_token(str(tmp_path / "short"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_token(str(tmp_path / "none"))
