"""Embedder behaviour on the tiny checkpoint: shapes, norms, MRL, determinism, batch
invariance, every input kind, and every bad-input case."""
from __future__ import annotations

import hashlib
import io
import os
import pathlib
import base64

import numpy as np
import pytest

from embedder import EmbedResult, Embedder, InputError, ModelLoadError
from embedder.embedder import mrl

from .conftest import make_image


def write_video(path: str, n_frames: int = 12, fps: int = 4, size=(160, 96)) -> str:
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(n_frames):
            arr = (np.random.RandomState(i).rand(size[1], size[0], 3) * 255).astype("uint8")
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def mixed_items(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    png = d / "a.png"
    make_image(120, 80, seed=3).save(png)
    jpg = d / "b.jpg"
    make_image(300, 200, seed=4).save(jpg, quality=90)
    video = write_video(str(d / "clip.mp4"))
    return [
        "a dog on a beach at sunset",
        "quarterly revenue grew " * 40,
        {"image": str(png)},
        pathlib.Path(jpg),
        _png_bytes(make_image(90, 90, seed=8)),
        {"image": "data:image/jpeg;base64," + base64.b64encode(jpg.read_bytes()).decode(), "text": "jpeg"},
        make_image(64, 48, seed=5),
        np.asarray(make_image(50, 70, seed=6)),
        {"text": "a caption", "image": str(png)},
        {"text": ["two ", "texts"], "image": [str(png), make_image(40, 40, seed=7)]},
        {"video": video},
        {"video": [make_image(64, 64, seed=i) for i in range(3)], "text": "frames"},
        {},
    ]


def test_shapes_norms_and_order(embedder, mixed_items):
    vecs = embedder.embed(mixed_items)
    assert vecs.shape == (len(mixed_items), embedder.dim) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # Every kind gives its own vector.
    sims = vecs @ vecs.T
    off = sims[~np.eye(len(vecs), dtype=bool)]
    assert off.max() < 0.9999
    # The caller's order is kept: each item alone gives its own row.
    for i in (0, 2, 10, 12):
        alone = embedder.embed([mixed_items[i]])[0]
        assert float(alone @ vecs[i]) >= 0.9999


def test_same_image_in_different_sources_gives_the_same_vector(embedder, mixed_items):
    path = mixed_items[2]["image"]
    uri = "data:image/png;base64," + base64.b64encode(pathlib.Path(path).read_bytes()).decode()
    sources = [path, uri, pathlib.Path(path), pathlib.Path(path).read_bytes(), "file://" + path]
    vecs = embedder.embed([{"image": s} for s in sources])
    assert np.allclose(vecs, vecs[0], atol=1e-6)
    # A plain string is always a text, even when it looks like a path.
    assert float(embedder.embed([path])[0] @ vecs[0]) < 0.9999


def test_dim_is_the_checkpoint_hidden_size(embedder):
    assert embedder.dim == 128


@pytest.mark.parametrize("dim", [64, 100, 127])
def test_mrl_truncation_equals_embedding_at_that_dim(embedder, mixed_items, dim):
    full = embedder.embed(mixed_items[:6])
    small = embedder.embed(mixed_items[:6], dim=dim)
    assert small.shape == (6, dim)
    assert np.allclose(np.linalg.norm(small, axis=1), 1.0, atol=1e-5)
    assert np.allclose(mrl(full, dim), small, atol=1e-6)
    expected = full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1, keepdims=True)
    assert np.allclose(small, expected, atol=1e-6)


@pytest.mark.parametrize("dim", [0, 63, 129, -1, 64.0, "64", True])
def test_dim_outside_range_is_an_input_error(embedder, dim):
    with pytest.raises(InputError, match="dim must be an integer from 64 to 128"):
        embedder.embed(["x"], dim=dim)


def test_deterministic_across_calls_and_loads(embedder, tiny_embedding_path, mixed_items):
    a = embedder.embed(mixed_items[:4])
    b = embedder.embed(mixed_items[:4])
    assert np.array_equal(a, b)
    with Embedder.from_pretrained(tiny_embedding_path, device="cpu") as other:
        assert np.allclose(other.embed(mixed_items[:4]), a, atol=1e-6)


def test_patch_embedding_as_a_matrix_product_gives_the_convolution_s_vectors(embedder, mixed_items):
    """The vision tower's Conv3d runs as a linear (7x faster on a CPU): same vectors."""
    from embedder.testing import stock_patch_embed

    embed = embedder.model.visual.patch_embed
    assert type(embed).__name__ == "LinearPatchEmbed"
    visual = mixed_items[2:5] + mixed_items[10:12]  # images and videos (temporal patches)
    fast = embedder.embed(visual)
    with stock_patch_embed(embedder.model):
        assert type(embed).__name__ == "Qwen3VLVisionPatchEmbed"
        stock = embedder.embed(visual)
    assert type(embed).__name__ == "LinearPatchEmbed"
    assert np.abs(fast - stock).max() <= 1e-5


def test_tiny_checkpoint_is_seeded(tmp_path):
    from embedder.testing import build_tiny_checkpoint

    digests = []
    for name in ("a", "b"):
        path = build_tiny_checkpoint(tmp_path / name, seed=7)
        digests.append(hashlib.sha256((pathlib.Path(path) / "model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_batch_invariance(embedder, mixed_items):
    """An item alone and inside a mixed, padded batch: cosine >= 0.9999."""
    batch = embedder.embed(mixed_items)
    small_budget = Embedder(embedder.model, embedder.tokenizer, embedder.image_processor,
                            embedder.video_processor, embedder.device, max_batch_tokens=64)
    try:
        one_by_one = small_budget.embed(mixed_items)
    finally:
        small_budget.close()
    cos = np.sum(batch * one_by_one, axis=1)
    assert cos.min() >= 0.9999, cos


def test_batch_size_caps_items_per_forward(embedder, mixed_items):
    capped = embedder.embed(mixed_items[:5], batch_size=2)
    assert np.allclose(capped, embedder.embed(mixed_items[:5]), atol=1e-5)


def test_embed_queries_and_documents(embedder):
    q = embedder.embed_queries(["a dog on a beach"], instruction="Find images matching this description.", dim=64)
    d = embedder.embed_documents(["a dog on a beach"], dim=64)
    plain = embedder.embed(["a dog on a beach"], dim=64, instruction="Find images matching this description.")
    assert q.shape == d.shape == (1, 64)
    assert np.allclose(q, plain, atol=1e-6)
    assert float(q[0] @ d[0]) < 0.9999  # the instruction changes the vector
    assert np.allclose(d, embedder.embed(["a dog on a beach"], dim=64), atol=1e-6)


def test_each_item_finds_itself_first(embedder, mixed_items):
    docs = embedder.embed_documents(mixed_items)
    again = embedder.embed_documents(mixed_items)
    assert (np.argmax(again @ docs.T, axis=1) == np.arange(len(mixed_items))).all()


def test_rgba_is_composited_on_white(embedder):
    from PIL import Image

    transparent = Image.new("RGBA", (64, 64), (10, 200, 30, 0))
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    grey = make_image(64, 64, mode="L")
    vecs = embedder.embed([transparent, white, grey, grey.convert("RGB")])
    assert np.allclose(vecs[0], vecs[1], atol=1e-6)
    assert np.allclose(vecs[2], vecs[3], atol=1e-6)


def test_video_file_and_frames(embedder, mixed_items):
    vec = embedder.embed([mixed_items[10], mixed_items[11]])
    assert np.isfinite(vec).all() and float(vec[0] @ vec[1]) < 0.9999


def test_progress_bar(embedder, capsys):
    embedder.embed(["a", "b", "c"], show_progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "item/s" in err


# --------------------------------------------------------------------------- bad input
@pytest.fixture()
def bad_files(tmp_path):
    files = {}
    files["missing"] = str(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    files["zero_bytes"] = str(tmp_path / "empty.png")
    buf = io.BytesIO()
    make_image(200, 200).save(buf, format="PNG")
    (tmp_path / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    files["truncated"] = str(tmp_path / "truncated.png")
    (tmp_path / "notes.png").write_text("this is a text file, not a picture")
    files["text_as_png"] = str(tmp_path / "notes.png")
    from PIL import Image

    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")  # 400 Mpx, a few kB on disk
    files["bomb"] = str(tmp_path / "bomb.png")
    Image.new("RGB", (2010, 10)).save(tmp_path / "thin.png")
    files["aspect"] = str(tmp_path / "thin.png")
    (tmp_path / "broken.mp4").write_text("not a video")
    files["bad_video"] = str(tmp_path / "broken.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    files["empty_video"] = str(tmp_path / "empty.mp4")
    return files


@pytest.mark.parametrize("case, item, message", [
    ("missing", "image", "file not found"),
    ("zero_bytes", "image", "empty"),
    ("truncated", "image", "truncated or corrupt"),
    ("text_as_png", "image", "cannot identify image"),
    ("bomb", "image", "refused before decoding"),
    ("aspect", "image", "aspect ratio 201.0"),
    ("bad_video", "video", "cannot decode video"),
    ("empty_video", "video", "empty"),
])
def test_bad_media_names_the_item(embedder, bad_files, case, item, message):
    items = ["fine", {item: bad_files[case]}]
    with pytest.raises(InputError, match=message) as info:
        embedder.embed(items)
    assert info.value.index == 1
    assert str(info.value).startswith("item 1: ")


def test_bomb_is_refused_before_decoding(embedder, bad_files, monkeypatch):
    from PIL import ImageFile

    def fail(*a, **k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
    with pytest.raises(InputError, match="refused before decoding"):
        embedder.embed([{"image": bad_files["bomb"]}])


@pytest.mark.parametrize("item, message", [
    (12, "unsupported item type int"),
    (object(), "unsupported item type object"),
    ({"txt": "typo"}, r"unknown key\(s\) \['txt'\]"),
    ({"text": 5}, "'text' must be a string"),
    ({"image": 3.5}, "unsupported image source type float"),
    ({"image": "http://127.0.0.1:9/cat.png"}, "URL fetching is disabled"),
    ({"video": "https://127.0.0.1:9/clip.mp4"}, "URL fetching is disabled"),
    ({"image": "ftp://host/x.png"}, "unsupported image URI scheme"),
    ({"image": "data:image/png;base64,@@@"}, "not valid base64"),
    ({"image": np.zeros((4, 4, 7), dtype=np.uint8)}, "image array must be"),
    ({"video": []}, "video frame list is empty"),
])
def test_unsupported_inputs(embedder, item, message):
    with pytest.raises(InputError, match=message) as info:
        embedder.embed(["ok", "ok", item])
    assert info.value.index == 2


def test_items_must_be_a_list(embedder):
    with pytest.raises(InputError, match="must be a list"):
        embedder.embed("just a string")


def test_paths_can_be_disabled(embedder, image_files):
    locked = Embedder(embedder.model, embedder.tokenizer, embedder.image_processor, embedder.video_processor,
                      embedder.device, load_options=embedder.load_options.__class__(allow_paths=False))
    try:
        with pytest.raises(InputError, match="reading local paths is disabled"):
            locked.embed([{"image": image_files[0]}])
        with pytest.raises(InputError, match="reading local paths is disabled"):
            locked.embed([{"video": image_files[0]}])
    finally:
        locked.close()


def test_skip_reports_bad_items_and_keeps_the_rest(embedder, bad_files, image_files):
    items = ["first", {"image": bad_files["missing"]}, image_files[0], {"image": bad_files["text_as_png"]},
             "last"]
    result = embedder.embed(items, on_error="skip", dim=64)
    assert isinstance(result, EmbedResult)
    assert result.indices == [0, 2, 4]
    assert [i for i, _ in result.errors] == [1, 3]
    assert "file not found" in result.errors[0][1] and "cannot identify image" in result.errors[1][1]
    assert result.vectors.shape == (3, 64)
    good = embedder.embed([items[i] for i in result.indices], dim=64)
    assert np.allclose(result.vectors, good, atol=1e-6)


def test_on_error_value_is_checked(embedder):
    with pytest.raises(InputError, match="on_error must be"):
        embedder.embed(["x"], on_error="ignore")


# --------------------------------------------------------------------------- loading
def test_missing_directory_is_a_model_load_error():
    with pytest.raises(ModelLoadError, match="neither an existing local directory"):
        Embedder.from_pretrained("./no/such/checkpoint")


def test_hub_id_without_network_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="hf download Qwen/Qwen3-VL-Embedding-2B --local-dir DIR"):
        Embedder.from_pretrained("Qwen/Qwen3-VL-Embedding-2B")


def test_missing_weights_fail_loudly(tmp_path):
    from safetensors.torch import load_file, save_file

    from embedder.testing import build_tiny_checkpoint

    path = pathlib.Path(build_tiny_checkpoint(tmp_path / "ckpt"))
    tensors = load_file(path / "model.safetensors")
    tensors.pop("model.language_model.layers.0.mlp.down_proj.weight")
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="did not load faithfully.*1 missing"):
        Embedder.from_pretrained(str(path), device="cpu")


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, embedder, connectors; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.split() == ["False", "False"]


def test_video_fps_and_max_frames_per_item(embedder, mixed_items):
    video = mixed_items[10]["video"]   # 12 frames at 4 fps: 3 s
    default = embedder.prepare({"video": video}).input_ids
    dense = embedder.prepare({"video": video, "fps": 4.0, "max_frames": 8}).input_ids
    vs = 151652
    assert default.count(vs) == 2      # fps 1 -> 3 frames -> at least 4 -> 2 pairs
    assert dense.count(vs) == 4        # fps 4 -> 12 frames -> at most 8 -> 4 pairs
    with pytest.raises(InputError, match="'fps' must be a number"):
        embedder.embed([{"video": video, "fps": 0}])
    with pytest.raises(InputError, match="'max_frames' must be an integer from 4 to 768"):
        embedder.embed([{"video": video, "max_frames": 2}])


def test_url_fetching_refuses_internal_hosts_and_checks_redirects(embedder, tmp_path):
    """With allow_urls, loopback/private hosts stay refused unless allow_private_urls; redirects too."""
    import functools
    import http.server
    import threading

    from embedder.items import LoadOptions

    make_image(40, 30).save(tmp_path / "pic.png")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    def view(**kw):
        return Embedder(embedder.model, embedder.tokenizer, embedder.image_processor, embedder.video_processor,
                        embedder.device, load_options=LoadOptions(**kw))

    try:
        public_only, private = view(allow_urls=True), view(allow_urls=True, allow_private_urls=True)
        with pytest.raises(InputError, match="non-public address 127.0.0.1"):
            public_only.embed([{"image": base + "/pic.png"}])
        vec = private.embed([{"image": base + "/pic.png"}])
        assert np.allclose(vec, embedder.embed([{"image": str(tmp_path / "pic.png")}]), atol=1e-6)
        with pytest.raises(InputError, match="non-public address 169.254.169.254"):
            view(allow_urls=True, allow_private_urls=False).embed([{"image": "http://169.254.169.254/x.png"}])
        from embedder.items import check_url_host
        from embedder.urls import next_url

        with pytest.raises(InputError, match="only http"):
            check_url_host("gopher://x/", allow_private=True)
        with pytest.raises(InputError, match="non-public address 169.254.169.254"):
            next_url("http://example.com/a.png", "http://169.254.169.254/latest/meta-data", allow_private=False)
        with pytest.raises(InputError, match="non-public address 127.0.0.1"):
            next_url("http://example.com/a.png", "//127.0.0.1:8080/x", allow_private=False)
        public_only.close()
        private.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
