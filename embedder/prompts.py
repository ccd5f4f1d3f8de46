"""Prompt rendering and tokenisation, exactly as the released code does.

"The release" throughout ``embedder`` is the official Qwen3-VL-Embedding / -Reranker code
(github.com/QwenLM/Qwen3-VL-Embedding, Jan 2026) with qwen-vl-utils 0.0.14; where its
technical report (arXiv 2601.04720) differs, the code is followed. "Spec point N" in
docstrings numbers the steps of that algorithm: embedder points 1-12 (backbone, item,
instruction, conversation, prompt text, ``<|endoftext|>``, image sizing, video sampling,
tokenising, pooling, Matryoshka dims, precision) and reranker points 1-5 (score head,
prompt, truncation, left padding, pixel limits).

The prompt is rendered as text with the visual placeholders already expanded to the
right number of pad tokens (and, for videos, the transformers 4.57.x per-frame-pair
layout), then tokenised in one call, so no processor version can change it.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Sequence

# Version of the prompt layout below (templates, default instructions, placeholders, truncation).
# Bump it whenever a change here changes any vector or score: stores keep it in their
# embedding fingerprint (embedder.fingerprint) and refuse vectors made with another.
PROMPT_FORMAT = 1

DEFAULT_EMBED_INSTRUCTION = "Represent the user's input."
DEFAULT_RERANK_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
RERANK_SYSTEM = ('Judge whether the Document meets the requirements based on the Query and the Instruct '
                 'provided. Note that the answer can only be "yes" or "no".')

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

ENDOFTEXT_ID = 151643
IM_START_ID = 151644
IM_END_ID = 151645
VISION_START_ID = 151652
VISION_END_ID = 151653
IMAGE_PAD_ID = 151655
VIDEO_PAD_ID = 151656
YES_ID = 9693
NO_ID = 2152

MERGE = 4  # spatial merge 2x2: four patches make one visual token


def normalize_instruction(instruction: str | None, default: str = DEFAULT_EMBED_INSTRUCTION) -> str:
    """Spec point 3: strip; empty -> default; append '.' unless it ends in punctuation (P*)."""
    if instruction is None:
        return default
    text = instruction.strip()
    if not text:
        return default
    if not unicodedata.category(text[-1]).startswith("P"):
        text += "."
    return text


def image_placeholder(grid_thw: Sequence[int]) -> str:
    t, h, w = (int(x) for x in grid_thw)
    return VISION_START + IMAGE_PAD * (t * h * w // MERGE) + VISION_END


def video_placeholder(grid_thw: Sequence[int], timestamps: Sequence[float]) -> str:
    """transformers 4.57.x layout: the outer vision tokens are REPLACED by one block per pair."""
    t, h, w = (int(x) for x in grid_thw)
    per_frame = h * w // MERGE
    if len(timestamps) != t:
        raise ValueError(f"{len(timestamps)} timestamps for {t} temporal patches")
    return "".join(f"<{ts:.1f} seconds>{VISION_START}{VIDEO_PAD * per_frame}{VISION_END}" for ts in timestamps)


def user_content(video_blocks: Sequence[str], image_blocks: Sequence[str], texts: Sequence[str]) -> str:
    """Videos first, then images, then texts (spec point 4); an item with no part is ``NULL``."""
    if not (video_blocks or image_blocks or texts):
        return "NULL"
    return "".join(video_blocks) + "".join(image_blocks) + "".join(texts)


def embed_prompt_parts(instruction: str, content: str) -> tuple[str, str]:
    """Return (prefix, suffix) around the TEXT part so that truncation can find it.

    The full prompt is ``prefix + texts + suffix``; the prefix already holds the visual blocks.
    """
    prefix = f"{IM_START}system\n{instruction}{IM_END}\n{IM_START}user\n{content}"
    suffix = f"{IM_END}\n{IM_START}assistant\n"
    return prefix, suffix


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    truncated: bool = False


def tokenize_embed_prompt(tokenizer, prefix: str, texts: str, suffix: str, max_length: int) -> Tokenized:
    """Tokenise an embedding prompt and append ``<|endoftext|>`` (spec points 5, 6 and 9).

    Over-long prompts lose text tokens from the end of the user's text; every special and
    visual token, the template and the final ``<|endoftext|>`` are kept.
    """
    ids = _encode(tokenizer, prefix + texts + suffix)
    if len(ids) + 1 <= max_length:
        return Tokenized(ids + [ENDOFTEXT_ID])
    head = _encode(tokenizer, prefix)
    tail = _encode(tokenizer, suffix)
    body = _encode(tokenizer, texts)
    keep = max_length - 1 - len(head) - len(tail)
    if keep < 0:
        raise ValueError(
            f"prompt needs {len(head) + len(tail) + 1} tokens without its text (instruction and visual "
            f"tokens), more than the maximum length {max_length}")
    return Tokenized(head + body[:keep] + tail + [ENDOFTEXT_ID], truncated=True)


def rerank_prompt_parts(instruction: str, query: str, document: str) -> str:
    return (f"{IM_START}system\n{RERANK_SYSTEM}{IM_END}\n{IM_START}user\n"
            f"<Instruct>: {instruction}<Query>:{query}\n<Document>:{document}"
            f"{IM_END}\n{IM_START}assistant\n")


def truncate_middle(ids: list[int], max_length: int, keep_ids: set[int], keep_last: int = 5) -> list[int]:
    """Reranker truncation (spec reranker point 3): drop ordinary tokens from the middle.

    Every token in ``keep_ids`` (special and visual tokens) and the last ``keep_last`` tokens
    are kept; the others are dropped from the end of the first part, as the release does
    when it keeps the first non-special tokens.
    """
    if len(ids) <= max_length:
        return ids
    body, last = ids[:-keep_last], ids[-keep_last:]
    n_special = sum(1 for t in body if t in keep_ids)
    budget = max_length - keep_last - n_special
    if budget < 0:
        raise ValueError(f"{n_special + keep_last} special and visual tokens exceed the maximum length {max_length}")
    out = []
    for t in body:
        if t in keep_ids:
            out.append(t)
        elif budget > 0:
            out.append(t)
            budget -= 1
    return out + last


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------------------- text-only models
# Qwen3-Embedding and Qwen3-Reranker (0.6B / 4B / 8B), as their official code does it
# (github.com/QwenLM/Qwen3-Embedding: README usage and examples/): no chat template
# for the embedder, a fixed prefix and suffix around one formatted string for the reranker.

TEXT_QUERY_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
TEXT_RERANK_PREFIX = f"{IM_START}system\n{RERANK_SYSTEM}{IM_END}\n{IM_START}user\n"
TEXT_RERANK_SUFFIX = f"{IM_END}\n{IM_START}assistant\n<think>\n\n</think>\n\n"


def text_query(instruction: str, query: str) -> str:
    """A text model's query: ``Instruct: {task}\\nQuery:{query}`` (the task as given, no fix-up)."""
    return f"Instruct: {instruction}\nQuery:{query}"


def tokenize_text(tokenizer, text: str, max_length: int) -> Tokenized:
    """A text embedder's tokens: the text, cut from the right to leave room for the final
    ``<|endoftext|>``, which is always there and always last (the token that is pooled).

    The same tokens as the released tokenizer called with ``truncation=True,
    max_length=8192`` (its post-processor appends ``<|endoftext|>`` and truncation
    keeps room for it), without depending on that post-processor being present.
    """
    ids = _encode(tokenizer, text)
    if len(ids) + 1 <= max_length:
        return Tokenized(ids + [ENDOFTEXT_ID])
    return Tokenized(ids[:max_length - 1] + [ENDOFTEXT_ID], truncated=True)


def text_rerank_pair(instruction: str, query: str, document: str) -> str:
    """The reranker's user turn, between the fixed prefix and suffix."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


def tokenize_text_rerank(tokenizer, instruction: str, query: str, document: str,
                         max_length: int) -> Tokenized:
    """Prefix tokens + the pair's tokens cut from the right to ``max_length - len(prefix)
    - len(suffix)`` + suffix tokens: the three are tokenised separately, as the release does."""
    head = _encode(tokenizer, TEXT_RERANK_PREFIX)
    tail = _encode(tokenizer, TEXT_RERANK_SUFFIX)
    body = _encode(tokenizer, text_rerank_pair(instruction, query, document))
    keep = max_length - len(head) - len(tail)
    if keep <= 0:
        raise ValueError(f"the reranker's prompt takes {len(head) + len(tail)} tokens, more than {max_length}")
    return Tokenized(head + body[:keep] + tail, truncated=len(body) > keep)
