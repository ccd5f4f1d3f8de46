"""The Qwen3-VL-Reranker cross-encoder (spec reranker points 1-5), batched by a token budget."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from .batching import token_budget_batches
from .contracts import (RerankerFront, ScoreCall, ScoreResult, as_input_error, document_error, query_error,
                        ranked)
from .errors import InputError
from .items import bounded_text, normalize_item
from .model import (LocalModel, Media, Prepared, collate, encode_media, last_hidden_state, rope_positions,
                    run_backbone)
from .prompts import (DEFAULT_RERANK_INSTRUCTION, ENDOFTEXT_ID, IMAGE_PAD_ID, NO_ID, VIDEO_PAD_ID,
                      VISION_START, VISION_START_ID, YES_ID, rerank_prompt_parts, truncate_middle)

__all__ = ["Reranker", "ScoreResult", "ranked", "shared_prefix_length", "MAX_LENGTH"]

log = logging.getLogger(__name__)

MAX_LENGTH = 10240
MIN_SHARED_PREFIX = 16  # below this, reusing the prompt head's cache is not worth its copies


def shared_prefix_length(sequences: Sequence[Sequence[int]], *, query_blocks: int) -> int:
    """Tokens every pair shares at its start, stopping before any document media.

    Identical pad tokens do not mean identical pixels, so the prefix ends before the
    first ``<|vision_start|>`` after the query's own ``query_blocks`` ones; at least one
    token of each pair is left to run.
    """
    if not sequences:
        return 0
    first = sequences[0]
    n = min(len(seq) for seq in sequences) - 1
    for seq in sequences[1:]:
        i = 0
        while i < n and seq[i] == first[i]:
            i += 1
        n = i
    starts = [i for i, t in enumerate(first[:n]) if t == VISION_START_ID]
    if len(starts) > query_blocks:
        n = starts[query_blocks]
    return max(n, 0)


class Reranker(LocalModel, RerankerFront):
    """Score (query, document) pairs in [0, 1] with Qwen3-VL-Reranker.

    Example:
        >>> rr = Reranker.from_pretrained("Qwen/Qwen3-VL-Reranker-2B")       # doctest: +SKIP
        >>> rr.rerank("a red car", ["a red car", {"image": "car.jpg"}], top_k=1)  # doctest: +SKIP
        [(0, 0.93)]
    """

    HEAD = True
    MAX_LENGTH = MAX_LENGTH
    THREAD_PREFIX = "qvl-rerank-prep"
    KIND = "vl-reranker"            # what /meta reports; the text model's is "text-reranker"
    default_instruction = DEFAULT_RERANK_INSTRUCTION

    @classmethod
    def implementation(cls, modality: str) -> type:
        if modality == "text":
            from .text import TextReranker

            return TextReranker
        return cls

    @property
    def kind(self) -> str:
        """``"vl-reranker"`` (Qwen3-VL-Reranker) or ``"text-reranker"`` (Qwen3-Reranker)."""
        return self.KIND

    def resolve_instruction(self, instruction: str | None) -> str:
        """The instruction a pair is scored with: the caller's, stripped; none or blank: the default."""
        return instruction.strip() if instruction and instruction.strip() else self.default_instruction

    def __init__(self, model: Any, tokenizer: Any, *args: Any, **kwargs: Any) -> None:
        import torch

        super().__init__(model, tokenizer, *args, **kwargs)
        lm_head = model.get_output_embeddings().weight  # tied 2B: these are the input embeddings
        with torch.no_grad():
            rows = lm_head[[YES_ID, NO_ID]]
            if rows.device.type == "cpu":  # bf16 on a CPU: the difference in float32 (a GPU keeps the release's)
                rows = rows.float()
            self._score_row = (rows[0] - rows[1]).detach().float().clone()
        self._keep_ids = set(int(i) for i in tokenizer.all_special_ids) | {IMAGE_PAD_ID, VIDEO_PAD_ID}
        self._prefix_cache: tuple | None = None  # (head ids, query media, KV cache) of the last query

    # ------------------------------------------------------------------ preparation
    def prepare_side(self, item: Any, index: int | None = None) -> tuple[str, Media]:
        """Load one side (query or document): its rendered content and media."""
        norm = normalize_item(item, index)
        media = encode_media(norm, self.load_options, self.image_processor, self.video_processor)
        if norm.is_empty:
            return "NULL", media
        return "".join(media.video_blocks + media.image_blocks) + bounded_text(norm.texts, self.load_options), media

    def prepare_pair(self, query: tuple[str, Media], document: tuple[str, Media], instruction: str) -> Prepared:
        text = rerank_prompt_parts(instruction, query[0], document[0])
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if ids and ids[-1] == ENDOFTEXT_ID:  # the reranker never ends with <|endoftext|>
            ids = ids[:-1]
        try:
            ids = truncate_middle(ids, self.max_length, self._keep_ids)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        return Prepared(ids, [query[1], document[1]])

    # ------------------------------------------------------------------ scoring
    # score / rerank (arguments checked, result shaped) come from RerankerFront; this is the model's half.
    def _score(self, call: ScoreCall) -> tuple[np.ndarray, list[tuple[int, str]]]:
        if self._closed:
            raise RuntimeError("Reranker is closed")
        instruction, documents, on_error, batch_size = call.instruction, call.documents, call.on_error, call.batch_size
        instr = self.resolve_instruction(instruction)
        try:
            q = self.prepare_side(call.query)
        except Exception as exc:  # noqa: BLE001
            raise query_error(as_input_error(exc, 0).reason) from exc
        futures = [self._pool.submit(self._prepare_doc, q, d, instr, i) for i, d in enumerate(documents)]
        ready: list[tuple[int, Prepared]] = []
        errors: list[tuple[int, str]] = []
        for i, fut in enumerate(futures):
            try:
                ready.append((i, fut.result()))
            except Exception as exc:  # noqa: BLE001
                err = as_input_error(exc, i)
                if on_error == "raise":
                    for f in futures:
                        f.cancel()
                    raise document_error(i, err.reason) from exc
                errors.append((i, err.reason))
        scores = np.full(len(documents), np.nan, dtype=np.float32)
        from tqdm.auto import tqdm

        prefix = shared_prefix_length([p.input_ids for _, p in ready], query_blocks=q[0].count(VISION_START))
        with tqdm(total=len(ready), unit="pair", disable=not call.show_progress, desc="reranking") as bar:
            if len(ready) > 1 and prefix >= MIN_SHARED_PREFIX:
                # The prompt head (system, instruction, query) is the same for every pair:
                # run it once and reuse its key/value cache for each document.
                lengths = [p.n_tokens - prefix for _, p in ready]
                for batch in token_budget_batches(lengths, max_tokens=self.max_batch_tokens, max_items=batch_size,
                                                  min_fill=self.min_fill):
                    scores[[ready[j][0] for j in batch]] = self.forward_with_prefix(
                        [ready[j][1] for j in batch], prefix=prefix, query_media=q[1])
                    bar.update(len(batch))
            else:
                lengths = [p.n_tokens for _, p in ready]
                for batch in token_budget_batches(lengths, max_tokens=self.max_batch_tokens, max_items=batch_size,
                                                  min_fill=self.min_fill):
                    scores[[ready[j][0] for j in batch]] = self.forward([ready[j][1] for j in batch])
                    bar.update(len(batch))
        return scores, errors

    def _prepare_doc(self, q: tuple[str, Media], doc: Any, instruction: str, index: int) -> Prepared:
        return self.prepare_pair(q, self.prepare_side(doc, index), instruction)

    def forward(self, prepared: Sequence[Prepared]) -> np.ndarray:
        """Scores of one batch of prepared pairs: sigmoid(w . h_last), left padded."""
        import torch

        with self._lock, torch.inference_mode():
            batch = collate(prepared, pad_id=ENDOFTEXT_ID, left_pad=True, device=self.device)
            hidden = last_hidden_state(self.model, batch)[:, -1].float()
            logits = hidden @ self._score_row.to(hidden.device)
            return torch.sigmoid(logits).cpu().numpy().astype(np.float32)

    def forward_with_prefix(self, prepared: Sequence[Prepared], *, prefix: int, query_media: Media) -> np.ndarray:
        """Scores of pairs whose first ``prefix`` tokens (and the query's media) are shared.

        The prefix is run once (cached per query) and its key/value cache is repeated over
        the batch; each pair then runs only its own document tokens, right-padded, with
        the rope positions it has in its full sequence. Equal to :meth:`forward` up to
        float rounding.
        """
        import copy

        import torch

        with self._lock, torch.inference_mode():
            backbone = self.model.model
            head_ids = tuple(prepared[0].input_ids[:prefix])
            cached = self._prefix_cache
            # The cache holds the query's Media object itself, so identity means same pixels.
            if cached is None or cached[0] != head_ids or cached[1] is not query_media:
                head = collate([Prepared(list(head_ids), [query_media])], pad_id=ENDOFTEXT_ID, left_pad=False,
                               device=self.device)
                cached = self._prefix_cache = (head_ids, query_media, run_backbone(self.model, head,
                                                                                   use_cache=True).cache)
            cache = copy.deepcopy(cached[2])
            tails = [Prepared(p.input_ids[prefix:], p.media[1:]) for p in prepared]
            batch = collate(tails, pad_id=ENDOFTEXT_ID, left_pad=False, device=self.device)
            n, width = batch["input_ids"].shape
            cache.batch_repeat_interleave(n)
            mrope = torch.zeros((3, n, width), dtype=torch.long, device=self.device)
            for row, p in enumerate(prepared):
                full = rope_positions(backbone, p, device=self.device)[:, prefix:]
                mrope[:, row, :full.shape[1]] = full
                mrope[:, row, full.shape[1]:] = full[:, -1:] + 1
            text = torch.arange(prefix, prefix + width, device=self.device).expand(n, width)
            tail_mask = batch["attention_mask"]
            batch["attention_mask"] = torch.cat(
                [torch.ones((n, prefix), dtype=tail_mask.dtype, device=self.device), tail_mask], dim=1)
            batch["position_ids"] = torch.cat([text[None], mrope], dim=0)
            hidden = run_backbone(self.model, batch, cache=cache, use_cache=True).last_hidden_state
            last = tail_mask.sum(dim=1) - 1
            h = hidden[torch.arange(n, device=hidden.device), last].float()
            logits = h @ self._score_row.to(h.device)
            return torch.sigmoid(logits).cpu().numpy().astype(np.float32)

    def __repr__(self) -> str:
        return f"Reranker({self.name!r}, device={self.device}, dtype={self.dtype})"
