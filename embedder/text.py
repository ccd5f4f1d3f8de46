"""The text-only models: Qwen3-Embedding and Qwen3-Reranker (0.6B, 4B, 8B).

``Embedder.from_pretrained`` / ``Reranker.from_pretrained`` give these classes when the
checkpoint's ``config.json`` names a text-only architecture (``Qwen3ForCausalLM``), so
users never name them: one API, the kind read from the checkpoint. They keep the VL
classes' machinery (token-budget batches sorted by length, preparation of the next chunk
while the model runs, per-item errors, the reranker's shared-prefix reuse) and replace
the recipe with the text models' own, as their official code does it
(github.com/QwenLM/Qwen3-Embedding, README and ``examples/``):

* embedder: a query is ``Instruct: {task}\\nQuery:{query}``, a document its text alone;
  left padding, at most 8192 tokens, the final ``<|endoftext|>`` pooled (always kept by
  truncation), L2-normalised; Matryoshka dims from 32 (the model cards' minimum);
* reranker: a fixed system prompt, the user turn
  ``<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}`` cut from the right
  to fit 8192 tokens with the prefix and the assistant turn's empty think block, and
  ``sigmoid(logit_yes - logit_no)`` of the last token.

An image, a video or a fused item is refused as that item's :class:`InputError`
("this model embeds text only"), so a store ingesting a mixed table lands the text rows
and reports the others.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from .embedder import Embedder
from .errors import InputError, ModelLoadError
from .items import Item, bounded_text, normalize_item
from .model import Media, Prepared
from .prompts import ENDOFTEXT_ID, TEXT_QUERY_INSTRUCTION, text_query, tokenize_text, tokenize_text_rerank
from .reranker import Reranker

__all__ = ["TextEmbedder", "TextReranker", "TEXT_MIN_DIM", "refuse_media"]

log = logging.getLogger(__name__)

TEXT_MIN_DIM = 32  # Qwen3-Embedding model cards: "MRL support ... from 32 to" the full dimension


def refuse_media(item: Item, index: int | None) -> None:
    """Raise :class:`InputError` for an item with an image or a video (alone or fused)."""
    if item.images or item.videos:
        what = "a fused item" if (item.texts or (item.images and item.videos)) else \
            ("an image" if item.images else "a video")
        raise InputError(f"this model embeds text only; got {what} (load a Qwen3-VL model for images and video)",
                         index=index)


def collate_text(prepared: Sequence[Prepared], *, left_pad: bool, device) -> dict:
    """Pad token ids (with ``<|endoftext|>``) and build the attention mask."""
    import torch

    width = max(p.n_tokens for p in prepared)
    ids = torch.full((len(prepared), width), ENDOFTEXT_ID, dtype=torch.long)
    mask = torch.zeros((len(prepared), width), dtype=torch.long)
    for row, p in enumerate(prepared):
        seq = torch.tensor(p.input_ids, dtype=torch.long)
        span = slice(width - len(seq), width) if left_pad else slice(0, len(seq))
        ids[row, span] = seq
        mask[row, span] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


class TextEmbedder(Embedder):
    """Qwen3-Embedding: texts to vectors (see the module docstring). Made by
    ``Embedder.from_pretrained`` for a text-only checkpoint; same methods as :class:`Embedder`.

    Example:
        >>> emb = Embedder.from_pretrained("Qwen/Qwen3-Embedding-0.6B")   # doctest: +SKIP
        >>> emb.kind, emb.dim                                              # doctest: +SKIP
        ('text-embedding', 1024)
        >>> q = emb.embed_queries(["What is the capital of China?"], dim=256)  # doctest: +SKIP
    """

    KIND = "text-embedding"
    FINGERPRINT_KIND = "text-embedding"
    min_dim = TEXT_MIN_DIM
    default_query_instruction = TEXT_QUERY_INSTRUCTION

    @classmethod
    def implementation(cls, modality: str) -> type:
        if modality != "text":
            raise ModelLoadError("this checkpoint is a Qwen3-VL model; load it with Embedder.from_pretrained")
        return cls

    def sizing(self) -> dict[str, Any]:
        return {"max_length": int(self.max_length)}

    def prepare(self, item: Any, *, instruction: str | None = None, index: int | None = None) -> Prepared:
        """Tokenise one text item: a query when it has an instruction (its own or the call's), else a document."""
        norm = normalize_item(item, index)
        refuse_media(norm, index)
        text = "NULL" if norm.is_empty else bounded_text(norm.texts, self.load_options)
        task = norm.instruction if norm.instruction is not None else instruction
        if task is not None and task.strip():
            text = text_query(task, text)
        tok = tokenize_text(self.tokenizer, text, self.max_length)
        if tok.truncated:
            log.warning("item %s: text truncated to fit %d tokens", index, self.max_length)
        return Prepared(tok.input_ids, [])

    def forward(self, prepared: Sequence[Prepared]) -> np.ndarray:
        """Pooled (last token, left padding), L2-normalised vectors of one batch."""
        import torch

        with self._lock, torch.inference_mode():
            batch = collate_text(prepared, left_pad=True, device=self.device)
            hidden = self.model(**batch, use_cache=False).last_hidden_state
            pooled = torch.nn.functional.normalize(hidden[:, -1].float(), p=2, dim=-1)
            return pooled.cpu().numpy()

    def __repr__(self) -> str:
        return f"TextEmbedder({self.name!r}, dim={self.dim}, device={self.device}, dtype={self.dtype})"


class TextReranker(Reranker):
    """Qwen3-Reranker: (query, document) text pairs scored in [0, 1] (see the module
    docstring). Made by ``Reranker.from_pretrained`` for a text-only checkpoint."""

    KIND = "text-reranker"
    MAX_LENGTH = 8192
    default_instruction = TEXT_QUERY_INSTRUCTION

    @classmethod
    def implementation(cls, modality: str) -> type:
        if modality != "text":
            raise ModelLoadError("this checkpoint is a Qwen3-VL model; load it with Reranker.from_pretrained")
        return cls

    def resolve_instruction(self, instruction: str | None) -> str:
        """The instruction as given (the release does not touch it); none or blank: the default."""
        return instruction if instruction is not None and instruction.strip() else self.default_instruction

    def prepare_side(self, item: Any, index: int | None = None) -> tuple[str, Media]:
        norm = normalize_item(item, index)
        refuse_media(norm, index)
        return ("NULL" if norm.is_empty else bounded_text(norm.texts, self.load_options)), Media()

    def prepare_pair(self, query: tuple[str, Media], document: tuple[str, Media], instruction: str) -> Prepared:
        try:
            tok = tokenize_text_rerank(self.tokenizer, instruction, query[0], document[0], self.max_length)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        return Prepared(tok.input_ids, [])

    def _scores(self, hidden: Any) -> np.ndarray:
        import torch

        logits = hidden.float() @ self._score_row.to(hidden.device)
        return torch.sigmoid(logits).cpu().numpy().astype(np.float32)

    def forward(self, prepared: Sequence[Prepared]) -> np.ndarray:
        """Scores of one batch of prepared pairs, left padded (the last token is every pair's own)."""
        import torch

        with self._lock, torch.inference_mode():
            batch = collate_text(prepared, left_pad=True, device=self.device)
            hidden = self.model.model(**batch, use_cache=False).last_hidden_state
            return self._scores(hidden[:, -1])

    def forward_with_prefix(self, prepared: Sequence[Prepared], *, prefix: int, query_media: Media) -> np.ndarray:
        """Scores of pairs sharing their first ``prefix`` tokens (system prompt, instruction,
        query): the prefix runs once per query (cached), each pair runs its own tail on a copy
        of its key/value cache, at the positions it has in its full sequence."""
        import copy

        import torch

        with self._lock, torch.inference_mode():
            backbone = self.model.model
            head_ids = tuple(prepared[0].input_ids[:prefix])
            cached = self._prefix_cache
            if cached is None or cached[0] != head_ids:
                ids = torch.tensor([head_ids], dtype=torch.long, device=self.device)
                cached = self._prefix_cache = (head_ids, None, backbone(input_ids=ids, use_cache=True).cache)
            cache = copy.deepcopy(cached[2])
            batch = collate_text([Prepared(p.input_ids[prefix:], []) for p in prepared], left_pad=False,
                                 device=self.device)
            n, width = batch["input_ids"].shape
            cache.batch_repeat_interleave(n)
            tail_mask = batch["attention_mask"]
            batch["attention_mask"] = torch.cat(
                [torch.ones((n, prefix), dtype=tail_mask.dtype, device=self.device), tail_mask], dim=1)
            batch["position_ids"] = torch.arange(prefix, prefix + width, device=self.device).expand(n, width)
            hidden = backbone(**batch, cache=cache, use_cache=True).last_hidden_state
            last = tail_mask.sum(dim=1) - 1
            return self._scores(hidden[torch.arange(n, device=hidden.device), last])

    def __repr__(self) -> str:
        return f"TextReranker({self.name!r}, device={self.device}, dtype={self.dtype})"
