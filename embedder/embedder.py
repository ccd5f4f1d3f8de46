"""The Qwen3-VL-Embedding embedder (spec points 1-12)."""
from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .batching import token_budget_batches
from .contracts import (DEFAULT_QUERY_INSTRUCTION, MIN_DIM, EmbedCall, EmbedderFront, EmbedResult, as_input_error)
from .errors import InputError
from .fingerprint import KIND_EMBEDDING
from .items import bounded_text, normalize_item
from .model import LocalModel, Prepared, collate, encode_media, last_hidden_state
from .prompts import (DEFAULT_EMBED_INSTRUCTION, ENDOFTEXT_ID, embed_prompt_parts, normalize_instruction,
                      tokenize_embed_prompt, user_content)

__all__ = ["Embedder", "EmbedResult", "mrl", "MIN_DIM", "MAX_LENGTH", "DEFAULT_QUERY_INSTRUCTION"]

log = logging.getLogger(__name__)

MAX_LENGTH = 8192
CHUNK_ITEMS = 128  # items prepared ahead of the model, bounding memory


def mrl(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Matryoshka truncation: first ``dim`` components, L2-normalised again (spec point 11).

    Takes one vector or a 2-D array of them; always returns a 2-D float32 array.
    """
    out = np.ascontiguousarray(np.atleast_2d(vectors)[:, :dim], dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return out / norms


class Embedder(LocalModel, EmbedderFront):
    """Turn texts, images, videos and fused items into vectors in one space.

    Build one with :meth:`from_pretrained` (see :meth:`LocalModel.from_pretrained
    <embedder.model.LocalModel.from_pretrained>` for its arguments). One model per process; calls are thread-safe
    in the sense that they are serialised on the model.

    Example:
        >>> emb = Embedder.from_pretrained("Qwen/Qwen3-VL-Embedding-2B")   # doctest: +SKIP
        >>> q = emb.embed_queries(["a dog on a beach"], dim=1024)          # doctest: +SKIP
        >>> d = emb.embed_documents([{"image": "dog.jpg", "text": "Rex"}], dim=1024)  # doctest: +SKIP
        >>> (q @ d.T).shape                                                # doctest: +SKIP
        (1, 1)
    """

    MAX_LENGTH = MAX_LENGTH
    KIND = "vl-embedding"           # what /meta reports; the text model's is "text-embedding"
    FINGERPRINT_KIND = KIND_EMBEDDING
    min_dim = MIN_DIM               # smallest Matryoshka dimension
    default_query_instruction = DEFAULT_QUERY_INSTRUCTION

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._identity: tuple[str | None, str | None] | None = None  # (revision, weights digest), found once

    @classmethod
    def implementation(cls, modality: str) -> type:
        if modality == "text":
            from .text import TextEmbedder

            return TextEmbedder
        return cls

    @property
    def kind(self) -> str:
        """``"vl-embedding"`` (Qwen3-VL-Embedding) or ``"text-embedding"`` (Qwen3-Embedding)."""
        return self.KIND

    @property
    def dim(self) -> int:
        """Full embedding dimension (the text model's hidden size)."""
        config = self.model.config
        return int(getattr(config, "text_config", config).hidden_size)

    def sizing(self) -> dict[str, Any]:
        """The settings that shape an item's tokens, hence its vector (for the fingerprint)."""
        from .fingerprint import sizing_settings

        return sizing_settings(self.load_options, max_length=self.max_length)

    def fingerprint(self, *, document_instruction: str | None = None) -> dict[str, Any]:
        """How this embedder makes vectors, as a JSON-able dict (see :mod:`embedder.fingerprint`).

        The model id as given, its hub revision and a digest of its weight files (names,
        sizes and a few sampled bytes; the weights are not read in full), the kind, full
        dim, precision, instructions, the image/video sizing settings and the prompt
        format version. Stores keep it and compare it with
        :func:`~embedder.fingerprint.fingerprint_conflicts`.

        Args:
            document_instruction: the instruction documents are embedded with, when not
                the prompt's default (None).
        """
        from .fingerprint import checkpoint_folder, checkpoint_revision, make_fingerprint, weights_digest

        if self._identity is None:
            config = getattr(self.model, "config", None)
            folder = checkpoint_folder(self.name, config) if self.name else None
            self._identity = (checkpoint_revision(self.name, config, folder) if self.name else None,
                              weights_digest(folder) if folder else None)
        revision, weights = self._identity
        dtype = getattr(self.model, "dtype", None)
        return make_fingerprint(model=self.name, dim=self.dim, precision=str(dtype).replace("torch.", "") if dtype
                                is not None else None, revision=revision, weights=weights,
                                document_instruction=document_instruction,
                                query_instruction=self.default_query_instruction, kind=self.FINGERPRINT_KIND,
                                sizing=self.sizing())

    # ------------------------------------------------------------------ preparation
    def prepare(self, item: Any, *, instruction: str | None = None, index: int | None = None) -> Prepared:
        """Normalise, load and tokenise one item (thread-safe; no model call)."""
        norm = normalize_item(item, index)
        media = encode_media(norm, self.load_options, self.image_processor, self.video_processor)
        instr = normalize_instruction(norm.instruction if norm.instruction is not None else instruction,
                                      DEFAULT_EMBED_INSTRUCTION)
        # The user's texts come last (spec point 4): everything before them is the prefix,
        # so that truncation can cut text tokens only.
        if norm.is_empty:
            content, texts = "", user_content((), (), ())
        else:
            content = "".join(media.video_blocks + media.image_blocks)
            texts = bounded_text(norm.texts, self.load_options)
        prefix, suffix = embed_prompt_parts(instr, content)
        try:
            tok = tokenize_embed_prompt(self.tokenizer, prefix, texts, suffix, self.max_length)
        except ValueError as exc:
            raise InputError(str(exc), index=index) from exc
        if tok.truncated:
            log.warning("item %s: text truncated to fit %d tokens", index, self.max_length)
        return Prepared(tok.input_ids, [media])

    # ------------------------------------------------------------------ embedding
    # embed / embed_queries / embed_documents (arguments checked, result shaped) come from
    # EmbedderFront; this is the model's half.
    def _embed(self, call: EmbedCall) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
        full = np.zeros((len(call.items), self.dim), dtype=np.float32)
        ok = np.zeros(len(call.items), dtype=bool)
        errors: list[tuple[int, str]] = []
        for idx, vecs in self._run(call.items, call.instruction, call.batch_size, call.show_progress, call.on_error,
                                   errors):
            full[idx] = vecs
            ok[idx] = True
        return mrl(full, call.dim), ok, errors

    def _run(self, items: Sequence[Any], instruction: str | None, batch_size: int | None, show_progress: bool,
             on_error: str, errors: list) -> Iterator[tuple[list[int], np.ndarray]]:
        """Prepare chunk k+1 in the thread pool while the model runs chunk k."""
        from tqdm.auto import tqdm

        if self._closed:
            raise RuntimeError("Embedder is closed")
        chunks = [range(s, min(s + CHUNK_ITEMS, len(items))) for s in range(0, len(items), CHUNK_ITEMS)]
        submit: Callable[[range], list[Future]] = lambda r: [
            self._pool.submit(self.prepare, items[i], instruction=instruction, index=i) for i in r]
        bar = tqdm(total=len(items), unit="item", disable=not show_progress, desc="embedding")
        try:
            pending = submit(chunks[0]) if chunks else []
            for c, chunk in enumerate(chunks):
                ready: list[tuple[int, Prepared]] = []
                for i, fut in zip(chunk, pending):
                    try:
                        ready.append((i, fut.result()))
                    except Exception as exc:  # noqa: BLE001 - every failure is attributed to its item
                        err = as_input_error(exc, i)
                        if on_error == "raise":
                            for f in pending:
                                f.cancel()
                            raise err from exc
                        errors.append((i, err.reason))
                        bar.update(1)
                pending = submit(chunks[c + 1]) if c + 1 < len(chunks) else []
                for idx, vecs in self._forward_prepared(ready, batch_size):
                    bar.update(len(idx))
                    yield idx, vecs
        finally:
            bar.close()

    def _forward_prepared(self, ready: list[tuple[int, Prepared]],
                          batch_size: int | None) -> Iterator[tuple[list[int], np.ndarray]]:
        lengths = [p.n_tokens for _, p in ready]
        for batch in token_budget_batches(lengths, max_tokens=self.max_batch_tokens, max_items=batch_size,
                                          min_fill=self.min_fill):
            prepared = [ready[j][1] for j in batch]
            yield [ready[j][0] for j in batch], self.forward(prepared)

    def forward(self, prepared: Sequence[Prepared]) -> np.ndarray:
        """Pooled, un-truncated, L2-normalised vectors for already prepared items (one batch)."""
        import torch

        with self._lock, torch.inference_mode():
            batch = collate(prepared, pad_id=ENDOFTEXT_ID, left_pad=False, device=self.device)
            hidden = last_hidden_state(self.model, batch)
            last = batch["attention_mask"].sum(dim=1) - 1   # right padding: last real token
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
            return pooled.cpu().numpy()

    def count_tokens(self, item: Any, *, instruction: str | None = None) -> int:
        """Number of tokens the item's prompt takes (loads its media)."""
        return self.prepare(item, instruction=instruction).n_tokens

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, dim={self.dim}, device={self.device}, dtype={self.dtype})"
