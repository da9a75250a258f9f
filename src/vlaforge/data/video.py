"""Camera streams as MP4 files, with PyAV only: encode one episode, pack episodes into one file, decode.

The default encoding is H.264 (libx264) in 4:4:4 chroma at ``crf=0``, which x264 encodes losslessly in YUV.
The only loss is the RGB <-> YUV rounding (at most 2 levels of 255, measured). Why not LeRobot's default
(AV1 4:2:0 at crf 30): at 96 px, 4:2:0 halves the colour resolution of thin parts (the gripper, the puck),
errors reach 255 levels on edges, and a policy would train on images that differ from what the simulator
shows it at evaluation time. The files are still ~1.6 KB a frame at 96 px, and every decoder LeRobot uses
(FFmpeg through PyAV or torchcodec) reads them.

Frames sit at ``pts = k / fps`` exactly. Packing episodes into one file copies packets (no re-encode) and
shifts their timestamps, so episode ``e`` starts at ``from_timestamp = frames before it / fps`` (LeRobot's
``videos/<key>/from_timestamp``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from vlaforge.errors import InputError


class VideoError(RuntimeError, InputError):
    """A video file is missing, unreadable, or holds other frames than the metadata says (bad input: a command
    reports it as one ``error: ...`` line)."""


@dataclass(frozen=True)
class VideoSettings:
    """Encoder settings. ``codec`` is a PyAV encoder name; ``options`` are passed to it as strings."""

    codec: str = "libx264"
    pix_fmt: str = "yuv444p"
    crf: int | None = 0
    gop: int = 10  # keyframe interval: random access decodes at most this many frames
    options: dict = field(default_factory=lambda: {"bf": "0", "threads": "1", "preset": "veryfast"})

    def codec_options(self) -> dict[str, str]:
        opts = {"g": str(self.gop)}
        if self.crf is not None:
            opts["crf"] = str(self.crf)
        opts.update({str(k): str(v) for k, v in self.options.items()})
        return opts

    def info(self) -> dict:
        """The encoder fields LeRobot records in a video feature's ``info`` block."""
        return {"video.g": self.gop, "video.crf": self.crf}


#: LeRobot's own default, for datasets that should look exactly like LeRobot's (lossy, 4:2:0)
LEROBOT_DEFAULT = VideoSettings(codec="libsvtav1", pix_fmt="yuv420p", crf=30, gop=2, options={"preset": "12"})


def _quiet_libav() -> None:
    logging.getLogger("libav").setLevel(logging.ERROR)


def _existing(path: str | Path) -> Path:
    """A video file about to be read (libav quieted first); a missing one is a ``VideoError``."""
    _quiet_libav()
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file is missing")
    return path


def encode_frames(frames: Iterable[np.ndarray], path: str | Path, fps: int, settings: VideoSettings) -> int:
    """Write uint8 (H, W, 3) RGB frames to ``path`` (mp4). Returns the number of frames written."""
    import av

    _quiet_libav()
    path = Path(path)
    n = 0
    with av.open(str(path), "w", format="mp4") as container:
        stream = None
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"video frame: expected uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
            if stream is None:
                stream = container.add_stream(settings.codec, rate=fps, options=settings.codec_options())
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = settings.pix_fmt
                stream.time_base = Fraction(1, fps)
                shape = frame.shape
            elif frame.shape != shape:
                raise ValueError(f"video frame {n}: expected shape {shape}, got {frame.shape}")
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = n
            vf.time_base = Fraction(1, fps)
            for packet in stream.encode(vf):
                container.mux(packet)
            n += 1
        if stream is None:
            raise ValueError(f"{path}: no frames to encode")
        for packet in stream.encode():
            container.mux(packet)
    return n


def probe(path: str | Path) -> dict:
    """LeRobot's ``video.*`` info of a file: height, width, codec, pix_fmt, fps, channels, has_audio."""
    import av

    path = _existing(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            s = container.streams.video[0]
            channels = {"gray": 1, "gray8": 1}.get(s.pix_fmt or "", 3)
            return {
                "video.height": s.height,
                "video.width": s.width,
                "video.codec": s.codec_context.codec.canonical_name,
                "video.pix_fmt": s.pix_fmt,
                "video.is_depth_map": False,
                "video.fps": int(s.base_rate or s.average_rate or 0),
                "video.channels": channels,
                "has_audio": bool(container.streams.audio),
            }
    except av.error.FFmpegError as e:  # type: ignore[attr-defined]
        raise VideoError(f"{path}: cannot read video: {e}") from e


def concat(
    paths: Sequence[str | Path],
    out: str | Path,
    fps: int,
    lengths: Sequence[int],
    settings: VideoSettings | None = None,
) -> list[float]:
    """Pack episode files into ``out`` without re-encoding. Returns each input's start time in seconds.

    ``lengths[i]`` is the frame count of ``paths[i]``; input ``i`` is shifted by ``sum(lengths[:i]) / fps``.
    Inputs must share codec settings (they do when one recorder wrote them); when their codec headers differ
    the inputs are decoded and re-encoded with ``settings`` instead.
    """
    import av

    _quiet_libav()
    if len(paths) != len(lengths) or not paths:
        raise ValueError(
            f"concat: expected as many lengths as paths (>0), got {len(paths)} and {len(lengths)}"
        )
    starts, acc = [], 0
    for n in lengths:
        starts.append(acc / fps)
        acc += n
    inputs = [av.open(str(p)) for p in paths]
    try:
        ref = inputs[0].streams.video[0]
        same = all(
            c.streams.video[0].codec_context.extradata == ref.codec_context.extradata
            and c.streams.video[0].time_base == ref.time_base
            and (c.streams.video[0].width, c.streams.video[0].height) == (ref.width, ref.height)
            for c in inputs[1:]
        )
        tick = Fraction(1, fps) / ref.time_base
        if not same or tick.denominator != 1:
            raise _NeedsReencode
        with av.open(str(out), "w", format="mp4") as dst:
            ost = dst.add_stream_from_template(ref)
            ost.time_base = ref.time_base
            offset = 0
            for container, n in zip(inputs, lengths):
                ist = container.streams.video[0]
                for packet in container.demux(ist):
                    if packet.dts is None:
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = ost
                    dst.mux(packet)
                offset += n * int(tick)
    except _NeedsReencode:
        encode_frames((f for p in paths for f in iter_frames(p)), out, fps, settings or VideoSettings())
    finally:
        for c in inputs:
            c.close()
    return starts


class _NeedsReencode(Exception):
    pass


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every frame of a file in order, as uint8 (H, W, 3) RGB."""
    for _, frame in iter_timed_frames(path):
        yield frame


def iter_timed_frames(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """``(seconds, uint8 (H, W, 3))`` for every frame of a file, in presentation order."""
    import av

    path = _existing(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                yield float(frame.pts * stream.time_base), frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:  # type: ignore[attr-defined]
        raise VideoError(f"{path}: cannot decode: {e}") from e


def decode_ranges(
    path: str | Path, fps: int, ranges: Sequence[tuple[float, int]], out: Sequence[np.ndarray]
) -> None:
    """Decode ``path`` once and fill ``out[i]`` (uint8 (n_i, H, W, 3)) with the frames of ``ranges[i]``.

    ``ranges[i] = (from_timestamp, n_i)``: frames at ``from_timestamp + k / fps`` for ``k < n_i``. A frame is
    matched to the nearest expected time within a quarter frame; a missing frame is a :class:`VideoError`.
    """
    want: dict[int, tuple[int, int]] = {}
    for i, (start, n) in enumerate(ranges):
        first = round(start * fps)
        for k in range(n):
            want[first + k] = (i, k)
    filled = np.zeros(len(want), dtype=bool)
    slot = {key: j for j, key in enumerate(want)}
    for t, frame in iter_timed_frames(path):
        k = round(t * fps)
        if abs(t * fps - k) > 0.25 or k not in want:
            continue
        i, j = want[k]
        if frame.shape != out[i].shape[1:]:
            raise VideoError(
                f"{path}: frame at {t:.4f}s has shape {frame.shape}, expected {out[i].shape[1:]}"
            )
        out[i][j] = frame
        filled[slot[k]] = True
    if not filled.all():
        missing = [k for k, j in slot.items() if not filled[j]]
        raise VideoError(
            f"{path}: expected frames at {len(want)} timestamps, {len(missing)} missing "
            f"(first missing at {missing[0] / fps:.4f}s = frame {missing[0]}); the file is shorter than the "
            f"episode metadata says"
        )
