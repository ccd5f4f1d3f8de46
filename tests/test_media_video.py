"""Videos: the release's frame-list rule, PyAV decoding, sizing under the total budget,
and bounded memory (peak RSS of a separate process) for hostile inputs."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from embedder import InputError, MissingDependencyError
from embedder.items import LoadOptions
from embedder.prompts import VIDEO_PAD_ID, VISION_END_ID, VISION_START_ID

from .conftest import make_image


# --------------------------------------------------------------------------- the release's rule, written out
def _smart_resize(h: float, w: float, factor: int, min_pixels: float, max_pixels: float) -> tuple[int, int]:
    """qwen-vl-utils 0.0.14's smart_resize, re-derived here so the test does not trust the code under test."""
    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def expected_list_grid(n: int, width: int, height: int) -> tuple[int, int, int]:
    """Spec point 8 for a frame list of n frames of width x height."""
    used = min(n, 64)                                   # <= 64 as given, else linspace to 64
    nframes = used + used % 2                           # padded to an even count
    h, w = _smart_resize(height, width, 64, 4 * 64 * 64, 16384 * 64 * 64)   # fetch_image at factor 64
    max_pixels = max(min(768 * 1024, 10 * 768 * 1024 / nframes * 2), int(128 * 1024 * 1.05))
    h, w = _smart_resize(h, w, 32, 128 * 1024, max_pixels)
    return nframes // 2, h // 16, w // 16


def expected_file_grid(total: int, fps: float, width: int, height: int) -> tuple[int, int, int]:
    """Spec point 8 for a file, sized under the clip budget of 10 x 768 x 32 x 32 pixels."""
    nframes = min(min(max(total / fps * 1.0, 4), 64), total)
    nframes = math.floor(nframes / 2) * 2
    max_pixels = max(min(768 * 1024, 10 * 768 * 1024 / nframes * 2), int(128 * 1024 * 1.05))
    h, w = _smart_resize(height, width, 32, 128 * 1024, max_pixels)
    return nframes // 2, h // 16, w // 16


def user_part(ids: list[int]) -> list[int]:
    start = ids.index(151644, 1) + 3     # after <|im_start|>user\n
    return ids[start:]


def video_tokens(ids: list[int], grid: tuple[int, int, int]) -> None:
    t, h, w = grid
    assert ids.count(VISION_START_ID) == ids.count(VISION_END_ID) == t
    assert ids.count(VIDEO_PAD_ID) == t * h * w // 4


def write_video(path, *, frames: int, fps: int, size: tuple[int, int], flat: bool = False) -> str:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "45"}
        for i in range(frames):
            if flat:
                arr = np.full((size[1], size[0], 3), (i * 37) % 256, dtype="uint8")
            else:
                arr = (np.random.RandomState(i).rand(size[1], size[0], 3) * 255).astype("uint8")
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


# --------------------------------------------------------------------------- frame lists (issue 13.2)
@pytest.mark.parametrize("n, size", [(4, (100, 70)), (3, (100, 70)), (70, (640, 480))])
def test_frame_list_is_used_as_given_up_to_64_frames(embedder, n, size):
    frames = [make_image(*size, seed=i) for i in range(n)]
    prepared = embedder.prepare({"video": frames})
    grid = expected_list_grid(n, *size)
    assert prepared.media[0].video_grid_thw.tolist() == [list(grid)]
    video_tokens(prepared.input_ids, grid)
    # 4 frames: 2 pairs (was 32 when the list was repeated to 64 frames).
    if n == 4:
        assert grid[0] == 2


def test_frame_list_frames_equal_qwen_vl_utils(embedder):
    """The frames fed to the processor are fetch_video's, bit for bit (list <= 64 and > 64)."""
    from qwen_vl_utils.vision_process import fetch_video

    from embedder.video import load_video

    cases = [(n, "RGB", (90, 60)) for n in (4, 5, 70)] + [(3, mode, (128, 64)) for mode in ("RGBA", "L", "P")]
    for n, mode, size in cases:
        frames = [make_image(*size, seed=i).convert(mode) for i in range(n)]
        if mode == "RGBA":
            for f in frames:
                f.putalpha(make_image(*size, seed=9, mode="L"))
        release = frames if n <= 64 else [frames[i] for i in np.linspace(0, n - 1, 64, dtype=int)]
        ref = fetch_video({"video": release, "total_pixels": 10 * 768 * 32 * 32}, image_patch_size=16)
        ours = load_video(frames, LoadOptions()).frames
        assert ours.shape == ref.shape and float((ours - ref).abs().max()) == 0.0


def test_reranker_uses_the_frame_list_as_given(reranker):
    frames = [make_image(100, 70, seed=i) for i in range(4)]
    _, media = reranker.prepare_side({"video": frames})
    assert media.video_grid_thw.tolist() == [list(expected_list_grid(4, 100, 70))]
    ids = reranker.prepare_pair(reranker.prepare_side("q"), reranker.prepare_side({"video": frames}), "x").input_ids
    video_tokens(ids, expected_list_grid(4, 100, 70))


def test_frames_of_different_sizes_are_refused_with_their_sizes(embedder):
    with pytest.raises(InputError, match=r"video frames must have one size: frame 1 is 300x200"):
        embedder.embed([{"video": [make_image(100, 70), make_image(300, 200)]}])


# --------------------------------------------------------------------------- files (issue 14.2, PyAV)
def test_long_720p_file_is_sized_under_the_budget_and_embeds(embedder, tmp_path):
    path = write_video(tmp_path / "long720.mp4", frames=60, fps=2, size=(1280, 720), flat=True)  # 30 s
    prepared = embedder.prepare({"video": path})
    grid = expected_file_grid(60, 2, 1280, 720)
    assert grid == (15, 32, 60)
    assert prepared.media[0].video_grid_thw.tolist() == [list(grid)]
    video_tokens(prepared.input_ids, grid)
    assert prepared.n_tokens <= embedder.max_length
    vec = embedder.embed([{"video": path}])
    assert vec.shape == (1, embedder.dim) and np.isfinite(vec).all()


def test_file_frames_equal_the_release_reader(tmp_path):
    """Same indices and pixels as qwen-vl-utils' torchvision reader, which decoded with PyAV
    (frame.to_rgb().to_ndarray()) and resized the whole clip (bicubic, antialias)."""
    import av
    import torch
    from qwen_vl_utils.vision_process import smart_nframes
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    from embedder.video import load_video

    path = write_video(tmp_path / "clip.mp4", frames=40, fps=5, size=(320, 240))
    with av.open(path) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate)
        decoded = [f.to_rgb().to_ndarray() for f in c.decode(stream)]
    video = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)
    nframes = smart_nframes({"fps": 1.0, "max_frames": 64}, total_frames=len(decoded), video_fps=fps)
    idx = torch.linspace(0, len(decoded) - 1, nframes).round().long()
    _, gh, gw = expected_file_grid(len(decoded), fps, 320, 240)
    ref = TF.resize(video[idx], [gh * 16, gw * 16], interpolation=InterpolationMode.BICUBIC, antialias=True).float()
    loaded = load_video(path, LoadOptions())
    assert loaded.frames.shape == ref.shape and float((loaded.frames - ref).abs().max()) == 0.0
    times = (idx.float() / fps).tolist()
    assert loaded.timestamps == pytest.approx([(times[i] + times[i + 1]) / 2 for i in range(0, nframes, 2)])


def test_video_bytes_and_path_give_the_same_vector(embedder, tmp_path):
    path = write_video(tmp_path / "c.mp4", frames=12, fps=4, size=(160, 96))
    with open(path, "rb") as fh:
        data = fh.read()
    vecs = embedder.embed([{"video": path}, {"video": data}])
    assert np.allclose(vecs[0], vecs[1], atol=1e-6)


def test_corrupt_video_reports_pyav_s_error(embedder, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(InputError, match=r"cannot decode video .*(InvalidDataError|Invalid data)") as info:
        embedder.embed(["ok", {"video": str(bad)}])
    assert info.value.index == 1 and "read_video" not in str(info.value)


def test_missing_pyav_names_the_package_and_the_extra(embedder, tmp_path, monkeypatch):
    path = write_video(tmp_path / "c.mp4", frames=8, fps=4, size=(64, 64))
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(MissingDependencyError) as info:
        embedder.prepare({"video": path})
    message = str(info.value)
    assert "'av'" in message and "PyAV" in message and "[video]" in message


def test_video_can_be_switched_off(embedder, tmp_path):
    from embedder import Embedder

    path = write_video(tmp_path / "c.mp4", frames=8, fps=4, size=(64, 64))
    off = Embedder(embedder.model, embedder.tokenizer, embedder.image_processor, embedder.video_processor,
                   embedder.device, load_options=LoadOptions(allow_video=False))
    try:
        for video in (path, [make_image(64, 64)] * 2):
            with pytest.raises(InputError, match=r"item 1: video input is disabled"):
                off.embed(["ok", {"video": video}])
        assert off.embed(["ok", make_image(64, 64)]).shape == (2, embedder.dim)
    finally:
        off.close()


def test_video_over_the_pixel_budget_is_refused_before_decoding(tmp_path, monkeypatch):
    import av

    from embedder.video import load_video

    path = write_video(tmp_path / "c.mp4", frames=16, fps=4, size=(320, 240))   # 4 s -> 4 frames
    small = LoadOptions(max_video_pixels=320 * 240 * 4 - 1)

    def no_decode(*a, **k):
        raise AssertionError("frames were decoded")

    monkeypatch.setattr(av.container.InputContainer, "decode", no_decode)
    with pytest.raises(InputError, match=r"320x240 pixels x 4 frames = 307200 pixels to decode exceeds the limit "
                                         r"of 307199 pixels \(max_video_pixels\)"):
        load_video(path, small)
    frame = make_image(320, 240)
    with pytest.raises(InputError, match=r"2 distinct frames .* exceeds the limit of 100000 pixels"):
        load_video([frame, make_image(320, 240, seed=1), frame], LoadOptions(max_video_pixels=100_000))


# --------------------------------------------------------------------------- memory (issue 14.1)
MEASURE = textwrap.dedent("""
    import io, json, resource, sys
    import numpy as np
    from PIL import Image
    from embedder.items import LoadOptions
    from embedder.video import load_video

    kind, arg = sys.argv[1], sys.argv[2]
    if kind == "list":
        buf = io.BytesIO()
        Image.new("RGB", (int(arg), int(arg)), (200, 30, 40)).save(buf, format="PNG")
        source = [buf.getvalue()] * 64                     # one flat frame, repeated
    else:
        source = arg
    load_video([Image.new("RGB", (64, 64))] * 2, LoadOptions())   # imports and first-call allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    video = load_video(source, LoadOptions())
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (after - before) / 1024, "shape": list(video.frames.shape),
                      "bytes": len(source[0]) if kind == "list" else None}))
""")


def peak_growth(kind: str, arg: str) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, kind, arg], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_repeated_huge_frame_is_decoded_once_with_bounded_memory():
    # 64 references to one 2048x2048 frame: the old path decoded 64 full-size copies and
    # resized them as one float tensor (64 x 50 MB); now one decode, the clip's 64 small frames.
    got = peak_growth("list", "2048")
    assert got["bytes"] < 100_000
    assert got["shape"] == [64, 3, 480, 480]
    # The output itself is 64 x 3 x 480 x 480 float32 = 177 MB (the release's model input).
    assert got["growth_mb"] < 400, got


@pytest.mark.parametrize("size, limit_mb", [((1920, 1080), 350), ((3840, 2160), 500)])
def test_large_video_files_are_downscaled_as_they_are_decoded(tmp_path, size, limit_mb):
    # 16 s at 1 fps: 16 frames sampled. Decoding them at full size first (the old path)
    # takes 16 x 6-25 MB as uint8 and 4x that as float before resizing.
    path = write_video(tmp_path / "big.mp4", frames=16, fps=1, size=size, flat=True)
    got = peak_growth("file", path)
    grid = expected_file_grid(16, 1, *size)
    assert got["shape"] == [16, 3, grid[1] * 16, grid[2] * 16]
    assert got["growth_mb"] < limit_mb, got


def test_long_video_decodes_only_the_gops_of_the_frames_taken(tmp_path, monkeypatch):
    """Jumping to the keyframe before each taken frame gives exactly the frames of decoding
    everything (B-frames and open GOPs included) while decoding a fraction of the video."""
    import av

    from embedder.video import _decode

    def write(path, frames, fps, options):
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
            stream.options = options
            for i in range(frames):
                arr = np.zeros((96, 160, 3), dtype="uint8")
                arr[:, :, 0], arr[:, : (i * 3) % 160, 1], arr[(i * 7) % 96, :, 2] = i % 256, 200, 255
                for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return str(path)

    decoded = []
    real = av.container.InputContainer.decode

    def counting(self, *args, **kwargs):
        for frame in real(self, *args, **kwargs):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(av.container.InputContainer, "decode", counting)
    for name, frames, fps, options in [
            ("gop20.mp4", 1200, 10, {"preset": "veryfast", "g": "20", "bf": "3"}),           # 120 s
            ("open.mp4", 900, 30, {"preset": "medium", "g": "7", "bf": "2", "x264-params": "open-gop=1"})]:
        path = write(tmp_path / name, frames, fps, options)
        decoded.clear()
        jumped = _decode(av, path, name, LoadOptions(), seek=True)
        n_jumped = len(decoded)
        decoded.clear()
        everything = _decode(av, path, name, LoadOptions(), seek=False)
        assert jumped.timestamps == everything.timestamps
        assert float((jumped.frames - everything.frames).abs().max()) == 0.0
        assert n_jumped < 0.6 * len(decoded), (name, n_jumped, len(decoded))
