"""How a collection's vectors were made, and whether another embedder makes the same ones.

A *fingerprint* is a small JSON-able dict that a store keeps with its collection
(:meth:`embedder.Embedder.fingerprint`, :meth:`embedder.RemoteEmbedder.fingerprint`)::

    {"fingerprint_version": 1,
     "model": "Qwen/Qwen3-VL-Embedding-2B",        # the id or path as given
     "revision": "0a1b...",                         # hub commit, when known
     "weights": "sha256:...",                       # names, sizes and sampled bytes of the weight files
     "kind": "embedding",
     "dim": 2048,                                   # the model's full dimension
     "precision": "bfloat16",
     "document_instruction": None,                  # None: the prompt's default
     "query_instruction": "Retrieve images, ...",
     "sizing": {"image_min_pixels": ..., "image_max_pixels": ..., "frame_min_pixels": ...,
                "frame_max_pixels": ..., "video_max_total_pixels": ..., "fps": 1.0,
                "max_frames": 64, "max_length": 8192},
     "prompt_format": 1}

:func:`fingerprint_conflicts` lists the differences that make two sets of vectors
incompatible; a store raises :class:`~embedder.errors.SchemaMismatchError` with them.

Nothing here imports torch: :func:`weights_digest` reads only file names, sizes and a
few bytes of each weight file.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Mapping

from .items import MAX_PIXELS, MIN_PIXELS, LoadOptions
from .prompts import PROMPT_FORMAT, normalize_instruction

FINGERPRINT_VERSION = 1
KIND_EMBEDDING = "embedding"
# Weight files (safetensors, PyTorch pickles) and their shard indexes.
_WEIGHT_FILE = re.compile(r".*\.(safetensors|bin|pt|pth)$|.*\.index\.json$")
_SAMPLE_BYTES = 1 << 20  # read at the start and at the end of each weight file
_COMMIT = re.compile(r"[/\\]snapshots[/\\]([0-9a-f]{40})(?:[/\\]|$)")


def weights_digest(folder: str | os.PathLike) -> str | None:
    """``sha256:<hex>`` over the weight files of a checkpoint folder: names, sizes and sampled bytes.

    Cheap on any model size: per file, its name and size and at most 1 MiB from its start
    and 1 MiB from its end (a safetensors file starts with its tensor table, so two
    checkpoints of the same architecture differ in the sampled values). Returns None when
    the folder holds no weight file.
    """
    folder = os.fspath(folder)
    try:
        names = sorted(n for n in os.listdir(folder) if _WEIGHT_FILE.match(n))
    except OSError:
        return None
    if not names:
        return None
    digest = hashlib.sha256()
    for name in names:
        path = os.path.join(folder, name)
        try:
            size = os.path.getsize(path)
            digest.update(f"{name}\0{size}\0".encode())
            with open(path, "rb") as fh:
                digest.update(fh.read(_SAMPLE_BYTES))
                if size > 2 * _SAMPLE_BYTES:
                    fh.seek(size - _SAMPLE_BYTES)
                    digest.update(fh.read(_SAMPLE_BYTES))
        except OSError:
            return None
    return "sha256:" + digest.hexdigest()


def checkpoint_folder(source: str, config: Any = None) -> str | None:
    """The folder a checkpoint was loaded from: ``source`` itself, or its hub cache snapshot."""
    if os.path.isdir(source):
        return source
    try:
        import huggingface_hub

        revision = getattr(config, "_commit_hash", None) or None
        cached = huggingface_hub.try_to_load_from_cache(source, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - no cache or no hub client: the id alone is the identity
        return None
    return os.path.dirname(cached) if isinstance(cached, str) else None


def checkpoint_revision(source: str, config: Any = None, folder: str | None = None) -> str | None:
    """The hub commit a checkpoint came from (its config's, or the cache snapshot's), else None."""
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return str(commit)
    for path in (folder, source):
        match = _COMMIT.search(os.path.realpath(path)) if path else None
        if match:
            return match.group(1)
    return None


def sizing_settings(options: LoadOptions, *, max_length: int) -> dict[str, Any]:
    """The settings that shape an item's pixels and tokens, hence its vector."""
    from .video import FRAME_MAX_PIXELS, FRAME_MIN_PIXELS, MAX_TOTAL_PIXELS

    return {"image_min_pixels": MIN_PIXELS, "image_max_pixels": MAX_PIXELS,
            "frame_min_pixels": FRAME_MIN_PIXELS, "frame_max_pixels": FRAME_MAX_PIXELS,
            "video_max_total_pixels": MAX_TOTAL_PIXELS, "fps": float(options.fps),
            "max_frames": int(options.max_frames), "max_length": int(max_length)}


def make_fingerprint(*, model: str, dim: int, precision: str | None, revision: str | None = None,
                     weights: str | None = None, document_instruction: str | None = None,
                     query_instruction: str | None = None, sizing: Mapping[str, Any] | None = None,
                     kind: str = KIND_EMBEDDING, prompt_format: int = PROMPT_FORMAT) -> dict[str, Any]:
    """A fingerprint dict (see the module docstring); ``document_instruction`` is normalised, None stays None."""
    doc = None if document_instruction is None or not document_instruction.strip() else \
        normalize_instruction(document_instruction)
    return {"fingerprint_version": FINGERPRINT_VERSION, "model": str(model), "revision": revision,
            "weights": weights, "kind": kind, "dim": int(dim), "precision": precision,
            "document_instruction": doc, "query_instruction": query_instruction,
            "sizing": dict(sizing) if sizing is not None else None, "prompt_format": int(prompt_format)}


def fingerprint_from_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A ``qvl serve`` ``/meta`` answer's fingerprint: its ``fingerprint`` key, else built from the rest.

    A service that predates the key gives what it states (model name, dim); the fields it
    does not state are None, and :func:`fingerprint_conflicts` does not compare a None.
    """
    given = meta.get("fingerprint")
    if isinstance(given, Mapping):
        return dict(given)
    model = meta.get("model") or {}
    return make_fingerprint(model=str(model.get("name", "")), dim=int(meta.get("dim") or model.get("dim") or 0),
                            precision=None)


def fingerprint_conflicts(stored: Mapping[str, Any], current: Mapping[str, Any], dim: int) -> list[str]:
    """Human-readable reasons why vectors made as ``current`` says cannot join a store made as ``stored``.

    ``dim`` is the store's vector dimension. Empty list: compatible. A field either side
    does not know (None or absent) is not compared. What counts:

    * the model: the weights digests when both sides have one (the same weights under
      another path or name are the same model); else the hub revisions when both have
      one, and the model ids; else the model ids as given;
    * the kind (``embedding``), the prompt format version, the document instruction
      (None means the prompt's default), and each sizing setting (pixel limits, video
      fps and frames, token limit): each changes the vectors of documents;
    * the store's dimension must be at most the model's full dimension (Matryoshka
      truncation makes any smaller one).

    Not counted: precision (bf16 on a GPU against float32 on a CPU moves vectors by
    rounding only, cosine similarity above 0.99; indexing on a GPU and querying on a CPU
    is an ordinary deployment, so refusing it would be wrong), the query instruction
    (chosen per search), and the full dimension itself beyond the check above.

    Example:
        >>> a = make_fingerprint(model="m", dim=128, precision="float32")
        >>> fingerprint_conflicts(a, dict(a, document_instruction="Represent the photo."), 64)
        ["document instruction: stored None (the prompt's default), current 'Represent the photo.'"]
    """
    out: list[str] = []

    def known(key: str) -> tuple[Any, Any] | None:
        a, b = stored.get(key), current.get(key)
        return None if a is None or b is None else (a, b)

    weights, revision = known("weights"), known("revision")
    if weights is not None:
        if weights[0] != weights[1]:
            out.append(f"model weights differ: stored {stored.get('model')!r} ({weights[0]}), "
                       f"current {current.get('model')!r} ({weights[1]})")
    else:
        if revision is not None and revision[0] != revision[1]:
            out.append(f"model revision: stored {revision[0]!r}, current {revision[1]!r}")
        model = known("model")
        if model is not None and model[0] != model[1]:
            out.append(f"model: stored {model[0]!r}, current {model[1]!r}")
    for key, label in (("kind", "model kind"), ("prompt_format", "prompt format version")):
        pair = known(key)
        if pair is not None and pair[0] != pair[1]:
            out.append(f"{label}: stored {pair[0]!r}, current {pair[1]!r}")
    if "document_instruction" in stored and "document_instruction" in current:
        a, b = stored["document_instruction"], current["document_instruction"]
        if a != b:
            show = lambda v: "None (the prompt's default)" if v is None else repr(v)  # noqa: E731
            out.append(f"document instruction: stored {show(a)}, current {show(b)}")
    sizing = known("sizing")
    if sizing is not None:
        for key in sorted(set(sizing[0]) & set(sizing[1])):
            if sizing[0][key] != sizing[1][key]:
                out.append(f"sizing {key}: stored {sizing[0][key]!r}, current {sizing[1][key]!r}")
    full = current.get("dim")
    if full and int(dim) > int(full):
        out.append(f"dimension: the store holds {dim}-dimensional vectors, the current model makes at most {full}")
    return out
