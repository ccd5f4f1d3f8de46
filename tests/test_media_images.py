"""Images: shared lazy PIL images across threads, the format allow-list, the source-pixel
ceiling with the process's peak memory, and internal errors that keep a message."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

from embedder import InputError
from embedder.items import ALLOWED_IMAGE_FORMATS, DEFAULT_MAX_SOURCE_PIXELS, LoadOptions

from .conftest import make_image


# --------------------------------------------------------------------------- shared lazy images (issue 13.13)
def test_one_lazy_pil_image_in_several_items_always_works(embedder, tmp_path):
    from PIL import Image

    path = tmp_path / "photo.png"
    make_image(300, 200, seed=3).save(path)
    eager = Image.open(path)
    eager.load()
    want = embedder.embed(["hello", eager, {"text": "hello", "image": eager}])
    for _ in range(30):
        img = Image.open(path)      # lazy: pixels not read yet
        got = embedder.embed(["hello", img, {"text": "hello", "image": img}])
        assert np.allclose(got, want, atol=1e-6)
        img = Image.open(path)
        got = embedder.embed([img] * 4)
        assert np.allclose(got, want[1], atol=1e-6)


def test_an_internal_error_without_message_is_described(embedder, monkeypatch):
    import embedder.model as model

    def broken(*a, **k):
        raise AssertionError()  # no message, as Pillow raised it

    monkeypatch.setattr(model, "load_image", broken)
    with pytest.raises(InputError) as info:
        embedder.embed(["fine", make_image(64, 64)])
    assert info.value.index == 1
    reason = info.value.reason
    assert reason.startswith("AssertionError: ") and reason != "AssertionError: "
    assert "test_media_images.py" in reason and "broken" in reason


# --------------------------------------------------------------------------- formats (issue 14.7)
EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 16 16
%%EndComments
newpath 0 0 moveto 16 0 lineto 16 16 lineto closepath fill
showpage
%%EOF
"""


def test_eps_is_refused_without_running_ghostscript(embedder, tmp_path, monkeypatch):
    from PIL import EpsImagePlugin, Image

    assert Image.open(io.BytesIO(EPS)).format == "EPS"   # Pillow alone would open it (and run gs to load it)
    calls = []

    def spy(*a, **k):
        calls.append(a)
        raise RuntimeError("Ghostscript must not run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", spy)
    (tmp_path / "x.png").write_bytes(EPS)
    for source in (EPS, str(tmp_path / "x.png")):
        with pytest.raises(InputError, match=r"not an image in an accepted format \(JPEG, PNG, WEBP, BMP, TIFF, "
                                             r"GIF, ICO\)") as info:
            embedder.embed(["ok", {"image": source}])
        assert info.value.index == 1
    with pytest.raises(InputError, match="video frame 0: .*accepted format"):
        embedder.embed([{"video": [EPS, EPS]}])
    assert calls == []


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_accepted_formats_still_open(embedder, fmt):
    assert fmt in ALLOWED_IMAGE_FORMATS
    buf = io.BytesIO()
    make_image(80, 60, seed=1).save(buf, format=fmt)
    assert embedder.embed([buf.getvalue()]).shape == (1, embedder.dim)


# --------------------------------------------------------------------------- pixel ceiling (issue 14.4)
def flat_png(path, width: int, height: int) -> str:
    """A flat RGB PNG written row by row: tiny on disk, no image in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" + bytes([120, 60, 200]) * width
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                 + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return str(path)


MEASURE = textwrap.dedent("""
    import json, resource, sys
    from embedder.items import LoadOptions, load_image
    from embedder.errors import InputError
    from PIL import Image
    load_image(Image.new("RGB", (64, 64)), LoadOptions())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        out = {"size": list(load_image(sys.argv[1], LoadOptions()).size)}
    except InputError as exc:
        out = {"error": str(exc)}
    out["growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps(out))
""")


def measure(path: str) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, path], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_huge_flat_png_is_refused_from_its_header_with_bounded_memory(tmp_path):
    path = flat_png(tmp_path / "huge.png", 13000, 13000)   # 169 M pixels, ~0.5 MB on disk
    got = measure(path)
    assert "13000x13000 = 169000000 pixels exceeds the limit of 67108864" in got["error"]
    assert got["growth_mb"] < 50, got        # decoding it cost 1.9 GB before


def test_image_at_the_ceiling_is_handled_with_memory_bounded_by_it(tmp_path):
    assert DEFAULT_MAX_SOURCE_PIXELS == 8192 * 8192
    path = flat_png(tmp_path / "big.png", 8192, 8192)
    got = measure(path)
    assert got.get("size") == [1344, 1344], got      # under 1800 x 32 x 32 pixels
    # One decoded RGB image of 8192 x 8192 is 192 MB (no second full-size copy for RGB).
    assert got["growth_mb"] < 400, got


def test_limits_are_configurable_from_from_pretrained(tiny_embedding_path):
    from embedder import Embedder

    with Embedder.from_pretrained(tiny_embedding_path, device="cpu", allow_paths=False,
                                  load_options=LoadOptions(max_source_pixels=1000, allow_urls=True)) as small:
        assert small.load_options.allow_urls and not small.load_options.allow_paths
        with pytest.raises(InputError, match="64x64 = 4096 pixels exceeds the limit of 1000 pixels"):
            small.embed([make_image(64, 64)])
