"""Media paths confined to folders (``LoadOptions.path_roots``), for paths that come from data.

The local embedder, the ``qvl serve`` client (RemoteEmbedder reads paths client-side) and
the service's ``--path-root`` all read a file only when its real path (links resolved) is
inside one of the folders; a path elsewhere is that item's error, naming the path and the
folders.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from embedder import InputError
from embedder.items import LoadOptions, check_path_root

from .conftest import make_image


def test_check_path_root_resolves_links_and_dots(media_layout):
    root, outside = media_layout
    check_path_root(root / "in.png", [root], "image")
    check_path_root(f"{root}/sub/../in.png", [str(root)], "image")
    check_path_root(outside / "out.png", None, "image")  # None: no confinement
    check_path_root(outside / "out.png", [root, outside], "image")  # any of several roots
    for bad in (outside / "out.png", root / "link.png", f"{root}/../elsewhere/out.png", "/etc/hostname"):
        with pytest.raises(InputError) as exc:
            check_path_root(bad, [root], "image")
        assert repr(str(bad)) in str(exc.value) and str(root) in str(exc.value)
        assert "outside the allowed media folders" in str(exc.value)
    with pytest.raises(InputError, match="it resolves to"):
        check_path_root(root / "link.png", [root], "image")
    # a sibling folder whose name merely starts with the root's is outside it
    (root.parent / "media2").mkdir()
    make_image(32, 32).save(root.parent / "media2" / "x.png")
    with pytest.raises(InputError):
        check_path_root(root.parent / "media2" / "x.png", [root], "image")


def test_embedder_with_path_roots_reads_only_inside(embedder, media_layout):
    root, outside = media_layout
    confined = dataclasses.replace(embedder.load_options, path_roots=(str(root),))
    view = copy.copy(embedder)  # the same model and lock, other load options (as the service does)
    view.load_options = confined
    items = [{"image": str(root / "in.png")}, {"image": str(outside / "out.png")},
             {"image": str(root / "link.png")}, {"image": "file://" + str(outside / "out.png")},
             {"video": [str(root / "in.png"), str(outside / "out.png")]}, "a text"]
    result = view.embed(items, on_error="skip")
    assert [i for i, _ in result.errors] == [1, 2, 3, 4] and result.indices == [0, 5]
    for _, reason in result.errors:
        assert "outside the allowed media folders" in reason and str(root) in reason
    assert "out.png" in dict(result.errors)[1] and "link.png" in dict(result.errors)[2]
    np.testing.assert_allclose(result.vectors[0], embedder.embed([items[0]])[0], atol=1e-5)
    with pytest.raises(InputError, match="outside the allowed media folders"):
        view.embed([items[1]])
    # unconfined (the library default) the same files are read
    assert embedder.load_options.path_roots is None
    assert embedder.embed([items[1], items[2]]).shape[0] == 2


def test_load_options_path_roots_normalised():
    assert LoadOptions(path_roots="/srv/media").path_roots == ("/srv/media",)
    assert LoadOptions(path_roots=["/a", "/b"]).path_roots == ("/a", "/b")
    assert LoadOptions().path_roots is None


def test_remote_embedder_and_served_path_root(embedder, media_layout):
    """RemoteEmbedder(path_roots=...) refuses before uploading; ``qvl serve --path-root``
    (ServiceSettings.path_roots) refuses paths a client names on the server."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from embedder import RemoteEmbedder
    from embedder.service import ServiceSettings

    from .service.test_service import serve

    root, outside = media_layout
    inside, out, link = str(root / "in.png"), str(outside / "out.png"), str(root / "link.png")
    want = embedder.embed([{"image": inside}])
    with serve(ServiceSettings(allow_paths=True, path_roots=(str(root),)), embedder) as url:
        with RemoteEmbedder(url, path_roots=[root]) as remote:   # client reads and uploads
            result = remote.embed([{"image": inside}, {"image": out}, {"image": link}], on_error="skip")
            assert [i for i, _ in result.errors] == [1, 2]
            assert all("outside the allowed media folders" in r for _, r in result.errors)
            np.testing.assert_allclose(result.vectors[0], want[0], atol=1e-4)
        with RemoteEmbedder(url, server_paths=True) as remote:   # the server reads: its --path-root
            result = remote.embed([{"image": inside}, {"image": out}, {"image": link}], on_error="skip")
            assert [i for i, _ in result.errors] == [1, 2]
            assert all("outside the allowed media folders" in r for _, r in result.errors)
            np.testing.assert_allclose(result.vectors[0], want[0], atol=1e-4)
        with RemoteEmbedder(url) as remote:   # no client roots: the client reads any file
            assert remote.embed([{"image": out}]).shape[0] == 1


def test_serve_cli_path_root_flag():
    import argparse

    from connectors.cli.serve import add_parser, settings_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    plain = settings_from_args(parser.parse_args(["serve", "--model", "m"]))
    assert plain.allow_paths is False and plain.path_roots is None
    confined = settings_from_args(parser.parse_args(["serve", "--model", "m", "--path-root", "/a",
                                                     "--path-root", "/b"]))
    assert confined.allow_paths is True and confined.path_roots == ("/a", "/b")
