"""Videos: decoding files with PyAV and sizing files and frame lists as the release does.

Two kinds of video source (spec point 8):

* a **file** (path, bytes, ``data:`` URI or URL): decoded with PyAV (``pip install
  -e ".[video]"``). The frames taken are the release's: ``smart_nframes``
  of qwen-vl-utils 0.0.14 (``fps`` 1, at most ``max_frames`` 64, at least 4, an even
  count) at the indices ``torch.linspace(0, n - 1, nframes).round()``. Each taken frame
  is converted to RGB as qwen-vl-utils' PyAV-based torchvision reader did
  (``frame.to_ndarray(format="rgb24")``) and downscaled at once with the release's own
  resize (torchvision, bicubic, antialias), so a decoded full-size frame lives only
  while it is being resized, one at a time;
* a **list of frames** (image sources): at most 64 are used as given, a longer list is
  subsampled with ``numpy.linspace(0, n - 1, 64, dtype=int)``; the list is padded to an
  even count by repeating its last frame. Each DISTINCT frame (same object, or equal
  path / bytes / data URI) is decoded once, sized as qwen-vl-utils' ``fetch_video``
  sizes frame lists (each frame through ``fetch_image`` at factor 64, then the clip
  resized as a whole), and repeated by reference.

Both are sized under the total budget of ``MAX_TOTAL_PIXELS`` = 10 x 768 x 32 x 32
pixels for the whole clip, the release's limit for frame lists. The release passes no
total budget for files, so qwen-vl-utils sizes them for a 128k-token model: a 30 s 720p
file would need ~11,000 tokens, more than the embedder's 8,192. Files use the same
budget as frame lists here; a file whose sampled frames already fit (at most 20
frames, or small frames) is sized exactly as the release sizes it.

Memory and work are bounded before anything is decoded: each frame's width x height
must be within ``LoadOptions.max_source_pixels`` and the pixels decoded for the model
(width x height x sampled frames for a file, the sum over distinct frames for a list)
within ``LoadOptions.max_video_pixels``.

A **segment** of a video file is the path with a media-fragment time range,
``talk.mp4#t=30,60`` (seconds, :func:`segment_ref`): the frames whose time ``i / fps``
lies in ``[30, 60)`` are sampled as a whole file would be (``fps`` 1, at most
``max_frames``), with timestamps counted from the window's start. The file's packet index
(:func:`video_info`) is read once and kept (a few recent files), so cutting an hour into
windows reads the file's packets once and then decodes, per window, only the GOPs of the
frames it takes, one window in memory at a time. :func:`segment_windows` cuts a duration
into overlapping windows.
"""
from __future__ import annotations

import bisect
import collections
import io
import math
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from .errors import InputError, LimitError, MissingDependencyError
from .items import (IMAGE_FACTOR, LoadOptions, _check_pixels, _describe, open_image, probe_image_size,
                    read_source_bytes)

MAX_FRAMES = 64
FRAME_MIN_PIXELS = 128 * IMAGE_FACTOR * IMAGE_FACTOR
FRAME_MAX_PIXELS = 768 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_TOTAL_PIXELS = 10 * FRAME_MAX_PIXELS
FRAME_LIST_FPS = 2.0
FRAME_FACTOR = 2          # frames per temporal patch
LIST_FRAME_FACTOR = 64    # qwen-vl-utils sizes list frames with fetch_image(..., image_patch_size=32): 32 x merge 2
LIST_FRAME_MIN_PIXELS = 4 * LIST_FRAME_FACTOR * LIST_FRAME_FACTOR
LIST_FRAME_MAX_PIXELS = 16384 * LIST_FRAME_FACTOR * LIST_FRAME_FACTOR


_NUMBER = r"[0-9]{1,7}(?:\.[0-9]{1,6})?"
_SEGMENT_REF = re.compile(rf"^(?P<path>.+)#t=(?P<start>{_NUMBER}),(?P<end>{_NUMBER})$")


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def segment_ref(path: str | os.PathLike, start: float, end: float) -> str:
    """The video source for the window ``[start, end)`` seconds of a file: ``/abs/talk.mp4#t=30,60``."""
    return f"{os.fspath(path)}#t={_seconds(start)},{_seconds(end)}"


def parse_segment_ref(source: Any) -> tuple[str, float, float] | None:
    """``(path, start, end)`` when ``source`` is a segment reference (:func:`segment_ref`), else None.

    A string that names an existing file as a whole is that file.
    """
    if not isinstance(source, str) or "#t=" not in source[-32:]:
        return None
    m = _SEGMENT_REF.match(source)
    if m is None or os.path.exists(source):
        return None
    start, end = float(m.group("start")), float(m.group("end"))
    if not end > start:
        return None
    return m.group("path"), start, end


def segment_windows(duration: float, window: float = 30.0, overlap: float = 5.0) -> list[tuple[float, float]]:
    """Windows of ``window`` seconds, each starting ``window - overlap`` after the previous one,
    covering ``[0, duration]``; the last one ends at ``duration``.

    Example:
        >>> segment_windows(70, 30, 5)
        [(0.0, 30.0), (25.0, 55.0), (50.0, 70.0)]
    """
    if not window > 0 or not 0 <= overlap < window:
        raise InputError(f"video windows need 0 <= overlap < window, got window {window} s, overlap {overlap} s")
    out: list[tuple[float, float]] = []
    start = 0.0
    while True:
        end = min(start + window, float(duration))
        out.append((round(start, 3), round(end, 3)))
        if end >= duration:
            return out
        start += window - overlap


@dataclass(frozen=True)
class VideoInfo:
    """A video file's stream, read from its packets (nothing decoded).

    Attributes:
        width, height: frame size.
        fps: the stream's average frame rate.
        total: frames in the stream.
        pts: every frame's timestamp in presentation order (None when unusable).
        keys: the keyframes' timestamps.
    """

    width: int
    height: int
    fps: float
    total: int
    pts: list[int] | None
    keys: list[int]

    @property
    def duration(self) -> float:
        """Seconds, as frames count them (``total / fps``)."""
        return self.total / self.fps if self.fps > 0 else 0.0


_INFO_CACHE: "collections.OrderedDict[tuple, VideoInfo]" = collections.OrderedDict()
_INFO_LOCK = threading.Lock()
_INFO_CACHE_SIZE = 16


def _probe(av: Any, data: bytes | str, desc: str) -> VideoInfo:
    with _open(av, data) as container:
        if not container.streams.video:
            raise InputError(f"cannot decode video {desc}: it has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        pts, keys, total = _frame_index(container, stream)
    return VideoInfo(width, height, fps, total, pts, keys)


def _info(av: Any, data: bytes | str, desc: str) -> VideoInfo:
    """:func:`_probe`, kept per file (path, size, modification time) for a few recent files."""
    if isinstance(data, bytes):
        return _probe(av, data, desc)
    st = os.stat(data)
    key = (os.path.realpath(data), st.st_size, st.st_mtime_ns)
    with _INFO_LOCK:
        if key in _INFO_CACHE:
            _INFO_CACHE.move_to_end(key)
            return _INFO_CACHE[key]
    info = _probe(av, data, desc)
    with _INFO_LOCK:
        _INFO_CACHE[key] = info
        while len(_INFO_CACHE) > _INFO_CACHE_SIZE:
            _INFO_CACHE.popitem(last=False)
    return info


def video_info(path: str | os.PathLike) -> VideoInfo:
    """The stream of a local video file (size, fps, frame count, packet index), read once and kept.

    Raises:
        InputError: not a readable video.
        MissingDependencyError: PyAV is not installed (the ``video`` extra).
    """
    av = _import_av()
    desc = _describe(os.fspath(path))
    try:
        return _info(av, os.fspath(path), desc)
    except InputError:
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"cannot read video {desc}: {type(exc).__name__}: {exc}") from exc


@dataclass
class LoadedVideo:
    """Frames ready for the video processor, with the timestamp of each frame pair."""

    frames: Any  # torch.Tensor (T, C, H, W), float in [0, 255]
    timestamps: list[float] = field(default_factory=list)


def sample_frame_list(frames: Sequence[Any], max_frames: int = MAX_FRAMES) -> list[Any]:
    """The release's ``sample_frames``: a list of at most ``max_frames`` is used as given;
    a longer one is subsampled with ``numpy.linspace(0, n - 1, max_frames, dtype=int)``.

    Example:
        >>> sample_frame_list(list(range(4)))
        [0, 1, 2, 3]
        >>> len(sample_frame_list(list(range(70))))
        64
    """
    import numpy as np

    if len(frames) <= max_frames:
        return list(frames)
    idx = np.linspace(0, len(frames) - 1, max_frames, dtype=int).tolist()
    return [frames[i] for i in idx]


def pair_timestamps(indices: Sequence[int], fps: float, merge: int = FRAME_FACTOR) -> list[float]:
    """Timestamp of each temporal patch: the mean of its frames' times (transformers 4.57.x)."""
    idx = list(indices)
    if len(idx) % merge:
        idx.extend(idx[-1] for _ in range(merge - len(idx) % merge))
    times = [i / fps for i in idx]
    return [(times[i] + times[i + merge - 1]) / 2 for i in range(0, len(times), merge)]


def clip_size(height: int, width: int, nframes: int, total_pixels: int = MAX_TOTAL_PIXELS) -> tuple[int, int]:
    """(height, width) of every frame of a clip of ``nframes`` frames: qwen-vl-utils'
    ``fetch_video`` rule, each frame within [128, 768] merged tokens and the clip within
    ``total_pixels``."""
    from qwen_vl_utils.vision_process import smart_resize

    max_pixels = max(min(FRAME_MAX_PIXELS, total_pixels / nframes * FRAME_FACTOR), int(FRAME_MIN_PIXELS * 1.05))
    return smart_resize(height, width, factor=IMAGE_FACTOR, min_pixels=FRAME_MIN_PIXELS, max_pixels=max_pixels)


def _resize(frame_chw: Any, size: tuple[int, int]) -> Any:
    """The release's resize of a clip (torchvision, bicubic, antialias), on one frame.

    One channel at a time: torchvision works in float, so a 4K frame would need ~200 MB
    at once; the channels are independent, and the result is bitwise the same.
    """
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    return torch.cat([TF.resize(frame_chw[None, c:c + 1], list(size), interpolation=InterpolationMode.BICUBIC,
                                antialias=True).float() for c in range(frame_chw.shape[0])], dim=1)[0]


def _check_budget(what: str, width: int, height: int, frames: int, options: LoadOptions) -> None:
    total = width * height * frames
    if total > options.max_video_pixels:
        raise LimitError(
            f"{what} of {width}x{height} pixels x {frames} frames = {total} pixels to decode exceeds the limit "
            f"of {options.max_video_pixels} pixels (max_video_pixels); refused before decoding")


def load_video(source: Any, options: LoadOptions) -> LoadedVideo:
    """Load a video file or a list of frames as the release does (spec point 8).

    Raises:
        InputError: video disabled, unreadable, over a limit, or a bad frame.
        MissingDependencyError: a video file needs PyAV (the ``video`` extra).
    """
    if not options.allow_video:
        raise InputError("video input is disabled here (allow_video=False; the service's --no-video); "
                         "send images or text instead")
    if isinstance(source, (list, tuple)):
        return _load_frame_list(list(source), options)
    segment = parse_segment_ref(source)
    if segment is not None:
        return _load_file(segment[0], options, window=segment[1:])
    return _load_file(source, options)


# --------------------------------------------------------------------------- frame lists
def _frame_key(frame: Any) -> Any:
    """Identity of a frame source: equal paths / bytes / URIs are one frame; objects by identity."""
    import pathlib

    if isinstance(frame, (str, bytes)):
        return (type(frame), frame)
    if isinstance(frame, pathlib.Path):
        return (str, str(frame))
    return ("id", id(frame))


def _load_frame_list(source: list[Any], options: LoadOptions) -> LoadedVideo:
    import numpy as np
    import torch
    from qwen_vl_utils.vision_process import smart_resize, to_rgb

    if not source:
        raise InputError("video frame list is empty")
    frames = sample_frame_list(source)
    keys = [_frame_key(f) for f in frames]
    distinct: dict[Any, int] = {}
    for j, key in enumerate(keys):
        distinct.setdefault(key, j)
    # Headers first: sizes, limits and the clip's final size, before any pixel is decoded.
    sizes: dict[Any, tuple[int, int]] = {}
    for key, j in distinct.items():
        try:
            sizes[key] = probe_image_size(frames[j], options)
        except InputError as exc:
            raise InputError(f"video frame {j}: {exc.reason}") from exc
    decoded = sum(w * h for w, h in sizes.values())
    if decoded > options.max_video_pixels:
        w0, h0 = sizes[keys[0]]
        raise LimitError(
            f"video frame list of {len(distinct)} distinct frames ({w0}x{h0} the first) = {decoded} pixels to decode "
            f"exceeds the limit of {options.max_video_pixels} pixels (max_video_pixels); refused before decoding")
    sized = {}
    for key, (w, h) in sizes.items():
        try:
            sized[key] = smart_resize(h, w, factor=LIST_FRAME_FACTOR, min_pixels=LIST_FRAME_MIN_PIXELS,
                                      max_pixels=LIST_FRAME_MAX_PIXELS)
        except ValueError as exc:
            raise InputError(f"video frame {distinct[key]} cannot be resized: {exc}") from exc
    first = sized[keys[0]]
    for key, j in distinct.items():
        if sized[key] != first:
            raise InputError(
                f"video frames must have one size: frame {j} is {sizes[key][0]}x{sizes[key][1]} "
                f"(sized to {sized[key][1]}x{sized[key][0]}), frame 0 is {sizes[keys[0]][0]}x{sizes[keys[0]][1]} "
                f"(sized to {first[1]}x{first[0]})")
    nframes = len(frames) + len(frames) % FRAME_FACTOR
    try:
        size = clip_size(first[0], first[1], nframes)
    except ValueError as exc:
        raise InputError(f"video frames cannot be resized: {exc}") from exc
    # One distinct frame at a time: decode, size as fetch_image does (its to_rgb, then PIL's
    # bicubic resize to the factor-64 size; both skipped when they would only copy), then
    # resize as the clip is resized.
    out: dict[Any, Any] = {}
    for key, j in distinct.items():
        try:
            img = open_image(frames[j], options)
        except InputError as exc:
            raise InputError(f"video frame {j}: {exc.reason}") from exc
        if img.mode != "RGB":
            img = to_rgb(img)
        if img.size != (sized[key][1], sized[key][0]):
            img = img.resize((sized[key][1], sized[key][0]))
        chw = torch.from_numpy(np.array(img).transpose(2, 0, 1))
        del img
        out[key] = _resize(chw, size)
        del chw
    video = [out[k] for k in keys]
    video.extend(video[-1:] * (nframes - len(video)))
    return LoadedVideo(frames=torch.stack(video), timestamps=pair_timestamps(range(nframes), FRAME_LIST_FPS))


# --------------------------------------------------------------------------- files
def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise MissingDependencyError("av", "video", "Decoding video files (with PyAV)") from exc
    return av


def _load_file(source: Any, options: LoadOptions, window: tuple[float, float] | None = None) -> LoadedVideo:
    data = read_source_bytes(source, options, "video")
    av = _import_av()
    import os

    if isinstance(data, bytes):
        if not data:
            raise InputError("video is empty (zero bytes)")
    elif os.path.getsize(data) == 0:
        raise InputError(f"video {data!r} is empty (zero bytes)")
    desc = _describe(source) if window is None else _describe(segment_ref(source, *window))
    try:
        return _decode(av, data, desc, options, window=window)
    except (InputError, MissingDependencyError):
        raise
    except av.FFmpegError as exc:
        raise InputError(f"cannot decode video {desc}: {type(exc).__name__}: {exc}") from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"cannot decode video {desc}: {type(exc).__name__}: {exc}") from exc


def _open(av: Any, data: bytes | str) -> Any:
    return av.open(io.BytesIO(data) if isinstance(data, bytes) else data, mode="r", metadata_errors="ignore")


def _frame_index(container: Any, stream: Any) -> tuple[list[int] | None, list[int], int]:
    """Read the packets (no decoding): every frame's timestamp in presentation order (None
    when some packet has none or two share one), the keyframes' timestamps, the count."""
    pts: list[int] = []
    keys: list[int] = []
    usable = True
    for packet in container.demux(stream):
        if not packet.size:
            continue
        if packet.pts is None:
            usable = False
        else:
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
    count = len(pts) if usable else int(stream.frames or 0) or len(pts)
    if not usable or not keys or len(set(pts)) != len(pts):
        return None, [], count
    return sorted(pts), sorted(keys), count


def _wanted_frames(container: Any, stream: Any, wanted: set[int], pts: list[int] | None,
                   keys: list[int]) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, frame)`` for the wanted frame indices, in increasing order.

    With a timestamp index, a frame's index is its timestamp's rank (as decord indexes
    frames) and the decoder jumps to the keyframe before the next wanted frame whenever
    that keyframe lies ahead, so a long video costs the GOPs of the 64 frames taken, not
    all of its frames. Without one, frames are counted from the start.
    """
    targets = sorted(wanted)
    if pts is None:
        for count, frame in enumerate(container.decode(stream)):
            if count in wanted:
                yield count, frame
            if count >= targets[-1]:
                return
        return
    rank = {p: i for i, p in enumerate(pts)}
    frames: Iterator[Any] | None = None
    last_pts: int | None = None
    t = 0
    while t < len(targets):
        k = bisect.bisect_right(keys, pts[targets[t]]) - 1
        key = keys[k] if k >= 0 else None
        if frames is None or (key is not None and last_pts is not None and key > last_pts):
            if key is not None and key > pts[0]:
                container.seek(key, stream=stream, backward=True, any_frame=False)
            frames = iter(container.decode(stream))
        frame = next(frames, None)
        if frame is None:
            return
        if frame.pts is None:
            continue
        last_pts = frame.pts
        i = rank.get(frame.pts)
        if i is None or i < targets[t]:
            continue
        # A wanted frame the decoder did not produce after a jump takes the next one.
        while t < len(targets) and targets[t] <= i:
            yield targets[t], frame
            t += 1


def _decode(av: Any, data: bytes | str, desc: str, options: LoadOptions, *, seek: bool = True,
            window: tuple[float, float] | None = None) -> LoadedVideo:
    import torch
    from qwen_vl_utils.vision_process import smart_nframes

    info = _info(av, data, desc)
    width, height, fps, total, pts, keys = info.width, info.height, info.fps, info.total, info.pts, info.keys
    if not seek:
        pts, keys = None, []
    if width <= 0 or height <= 0 or fps <= 0 or total <= 0:
        raise InputError(f"cannot decode video {desc}: no usable video stream "
                         f"({width}x{height}, {fps:g} fps, {total} frames)")
    try:
        _check_pixels((width, height), options)
    except InputError as exc:
        raise InputError(f"video {desc}: frame {exc.reason}") from exc
    first, count = 0, total
    if window is not None:  # the frames whose time i / fps is in [start, end)
        first = max(0, math.ceil(window[0] * fps - 1e-6))
        count = min(total, math.ceil(window[1] * fps - 1e-6)) - first
        if count <= 0:
            raise InputError(f"video segment {desc} holds no frame: the video has {total} frames at {fps:g} fps "
                             f"({total / fps:.1f} s)")
    try:
        try:
            nframes = smart_nframes({"fps": options.fps, "max_frames": options.max_frames}, total_frames=count,
                                    video_fps=fps)
        except ValueError:
            if window is None or count >= 2 * FRAME_FACTOR:
                raise
            nframes = 2 * FRAME_FACTOR  # a window shorter than the least frame count: frames repeat
        size = clip_size(height, width, nframes)
    except ValueError as exc:
        raise InputError(f"video {desc} ({count} frames at {fps:g} fps, {width}x{height}) cannot be sampled "
                         f"or sized: {exc}") from exc
    _check_budget(f"video {desc}", width, height, nframes, options)
    indices = [first + i for i in torch.linspace(0, count - 1, nframes).round().long().tolist()]
    small: dict[int, Any] = {}
    with _open(av, data) as container:
        stream = container.streams.video[0]  # PyAV's default slice threading: frame threads hold more frames
        for index, frame in _wanted_frames(container, stream, set(indices), pts, keys):
            # Full-size RGB only for the moment it takes to downscale it (the release's resize).
            rgb = frame.to_ndarray(format="rgb24")
            if rgb.shape[:2] != (height, width):
                raise InputError(f"cannot decode video {desc}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, "
                                 f"the stream announced {width}x{height}")
            small[index] = _resize(torch.from_numpy(rgb).permute(2, 0, 1), size)
            del rgb
    if not small:
        raise InputError(f"cannot decode video {desc}: no frame could be decoded")
    # A stream shorter than its header: the frames past its end repeat the last decoded one.
    last = small[max(small)]
    frames = [small.get(i, last) for i in indices]
    return LoadedVideo(frames=torch.stack(frames), timestamps=pair_timestamps([i - first for i in indices], fps))
