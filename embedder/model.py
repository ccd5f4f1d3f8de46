"""Checkpoint loading, device choice, input preparation and the forward pass.

Torch and transformers are imported here, lazily, and nowhere else in ``embedder``'s
import path, so ``import embedder`` stays fast.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence, TypeVar

from .contracts import as_input_error  # noqa: F401 - re-exported (embedder.service.core)
from .errors import MissingDependencyError, ModelLoadError
from .hub import check_hub_reachable
from .items import Item, LoadOptions, load_image, with_permissions
from .prompts import IMAGE_PAD_ID, VIDEO_PAD_ID, image_placeholder, video_placeholder

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto"):
    """``auto``: CUDA, then Apple MPS, then CPU."""
    import torch

    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: Any, device) -> Any:
    """A named or given dtype as a torch dtype; ``auto``: bf16 on CUDA (the release's precision),
    float16 on MPS, float32 on CPU (:func:`pick_dtype` refines the CPU's)."""
    import torch

    if dtype not in (None, "auto"):
        if isinstance(dtype, str):
            try:
                return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                        "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
            except KeyError:
                raise ValueError(f"dtype must be one of auto, float32, bfloat16, float16; got {dtype!r}") from None
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


# transformers' from_pretrained arguments that also locate the config (AutoConfig)
_CONFIG_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "trust_remote_code", "subfolder")


def pick_dtype(dtype: Any, device, source: str, kwargs: dict[str, Any]) -> tuple[Any, str]:
    """The torch dtype to load with, and why (``emb.dtype_reason``, the log, ``/meta``).

    ``auto`` on a CPU: bfloat16 where the processor multiplies it natively and a short
    calibration at the model's widths shows it faster, float32 otherwise
    (:func:`embedder.cpu.choose_cpu_dtype`, cached per machine). Elsewhere as :func:`resolve_dtype`.
    """
    import torch

    torch_dtype = resolve_dtype(dtype, device)
    name = str(torch_dtype).replace("torch.", "")
    if dtype not in (None, "auto"):
        return torch_dtype, f"{name}: asked for (dtype={dtype!r})"
    if device.type != "cpu":
        return torch_dtype, f"{name}: the default on {device.type}"
    from transformers import AutoConfig

    from .cpu import choose_cpu_dtype

    config = AutoConfig.from_pretrained(source, **{k: v for k, v in kwargs.items() if k in _CONFIG_KWARGS})
    text = getattr(config, "text_config", config)
    choice = choose_cpu_dtype(int(text.hidden_size), int(text.intermediate_size))
    return resolve_dtype(choice.dtype, device), choice.reason


def default_min_fill(device) -> float:
    """Smallest share of real tokens in a batch: padding is pure waste on a CPU, where a
    bigger batch buys almost no speed; on a GPU larger batches pay for some padding."""
    return 0.95 if device.type == "cpu" else 0.75


def default_max_batch_tokens(device) -> int:
    """Padded tokens per forward pass. On a CPU, past a few thousand tokens the activations
    no longer fit the caches and a token costs more (reranking 100 pairs: 1.31x the one-pair
    baseline at 2048, 1.28x at 4096, 1.11x at 16384); a GPU wants big batches."""
    return 4096 if device.type == "cpu" else 16384


def resolve_attention(attn_implementation: str | None, device) -> str:
    """flash-attention-2 on CUDA when installed, else SDPA."""
    if attn_implementation:
        return attn_implementation
    if device.type == "cuda":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


LOCAL_PACKAGES = (("torch", "torch"), ("torchvision", "torchvision"), ("transformers", "transformers"),
                  ("safetensors", "safetensors"))


def import_local_stack(purpose: str) -> None:
    """Import what running a model needs, or raise one clear error naming the ``local`` extra.

    A light install (without ``[local]``) has none of these packages: it talks to a
    ``qvl serve`` through :class:`~embedder.RemoteEmbedder` only.

    Raises:
        MissingDependencyError: the first missing package, with the install command.
    """
    import importlib

    for module, package in LOCAL_PACKAGES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingDependencyError(package, "local", purpose) from exc


# Keys that a checkpoint in the Qwen3VLForConditionalGeneration layout legitimately has
# beyond a bare Qwen3VLModel.
_IGNORABLE_UNEXPECTED = ("lm_head.weight",)


def load_model(path_or_id: str, *, head: bool, device: str = "auto", dtype: Any = "auto",
               attn_implementation: str | None = None, **kwargs: Any):
    """Load the backbone (``head=False``: ``Qwen3VLModel``) or the full generation model.

    Every weight must be found: a missing or unexpected key raises :class:`ModelLoadError`
    instead of silently leaving random weights (a known transformers 4.57 trap).

    Returns ``(model, tokenizer, image_processor, video_processor, device)``.

    Raises:
        MissingDependencyError: torch, torchvision or transformers is not installed (the
            ``local`` extra; a light install only talks to a ``qvl serve``).
    """
    import_local_stack(f"Loading {os.fspath(path_or_id)!r} to run in this process (a qvl serve URL would not)")
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer

    try:
        from transformers import Qwen3VLForConditionalGeneration, Qwen3VLModel
    except ImportError as exc:  # pragma: no cover - guarded by the pin
        raise ModelLoadError("transformers >= 5.24 with Qwen3-VL support is required") from exc

    dev = resolve_device(device)
    attn = resolve_attention(attn_implementation, dev)
    source = os.fspath(path_or_id)
    is_local = os.path.isdir(source)
    if not is_local and (source.startswith((".", "/", "~")) or source.count("/") != 1):
        raise ModelLoadError(
            f"checkpoint {source!r} is neither an existing local directory nor a Hugging Face id "
            "of the form 'owner/name' (e.g. Qwen/Qwen3-VL-Embedding-2B)")
    if not is_local:
        check_hub_reachable(source)  # one line at once, not transformers' retries, on a machine without network
    try:
        modality = checkpoint_modality(source, kwargs)
        cls: Any
        if modality == "text":
            from transformers import Qwen3ForCausalLM, Qwen3Model

            cls = Qwen3ForCausalLM if head else Qwen3Model
        else:
            cls = Qwen3VLForConditionalGeneration if head else Qwen3VLModel
        torch_dtype, dtype_reason = pick_dtype(dtype, dev, source, kwargs)
        model, info = cls.from_pretrained(source, dtype=torch_dtype, attn_implementation=attn,
                                          output_loading_info=True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source)
        image_processor = AutoImageProcessor.from_pretrained(source) if modality == "vl" else None
        video_processor = _load_video_processor(source) if modality == "vl" else None
    except ModelLoadError:
        raise
    except (OSError, ValueError) as exc:
        hint = ("" if is_local else
                " It is not a local directory, so it was looked up on the Hugging Face Hub. If this machine "
                "has no network access, download the checkpoint elsewhere (hf download "
                f"{source} --local-dir DIR), copy DIR here and pass its path; or set HF_HOME to a cache that "
                "holds it.")
        raise ModelLoadError(f"cannot load checkpoint {source!r}: {exc}.{hint}") from exc
    missing = list(info.get("missing_keys", []))
    unexpected = [k for k in info.get("unexpected_keys", []) if k not in _IGNORABLE_UNEXPECTED]
    mismatched = list(info.get("mismatched_keys", []))
    if missing or unexpected or mismatched:
        raise ModelLoadError(
            f"checkpoint {source!r} did not load faithfully into {cls.__name__}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(mismatched)} mismatched keys. Refusing to run with randomly initialised weights.")
    model.to(dev)
    model.eval()
    linear_patch_embed(model)
    if dev.type == "cpu" and torch_dtype != torch.float32:
        fp32_final_norm(model)
    model.qvl_dtype_reason = dtype_reason
    model.qvl_modality = modality
    log.info("%s runs in %s on %s (%s)", source, str(torch_dtype).replace("torch.", ""), dev, dtype_reason)
    return model, tokenizer, image_processor, video_processor, dev


# config.json ``architectures`` -> what the checkpoint embeds (the name of a checkpoint is never used).
VL_ARCHITECTURES = ("Qwen3VLForConditionalGeneration", "Qwen3VLModel")
TEXT_ARCHITECTURES = ("Qwen3ForCausalLM", "Qwen3Model")  # Qwen3-Embedding / Qwen3-Reranker


def modality_of_config(config: Any) -> str:
    """``"vl"`` (Qwen3-VL-Embedding / -Reranker) or ``"text"`` (Qwen3-Embedding / -Reranker),
    from a config's (dict or object) ``architectures``; its ``model_type`` when it names none.

    Raises:
        ModelLoadError: an architecture this package does not run.
    """
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    archs = list(get("architectures") or [])
    for arch in archs:
        if arch in VL_ARCHITECTURES:
            return "vl"
        if arch in TEXT_ARCHITECTURES:
            return "text"
    if not archs and get("model_type") in ("qwen3_vl", "qwen3"):
        return "vl" if get("model_type") == "qwen3_vl" else "text"
    raise ModelLoadError(f"unsupported architecture {archs or get('model_type')!r}: expected one of "
                         f"{VL_ARCHITECTURES + TEXT_ARCHITECTURES} (Qwen3-VL-Embedding/-Reranker, "
                         "Qwen3-Embedding/-Reranker)")


def checkpoint_modality(source: str, kwargs: dict[str, Any] | None = None) -> str:
    """:func:`modality_of_config` of a local folder or hub id's ``config.json``."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, **{k: v for k, v in (kwargs or {}).items() if k in _CONFIG_KWARGS})
    return modality_of_config(config)


_Model = TypeVar("_Model", bound="LocalModel")


class LocalModel:
    """What :class:`~embedder.Embedder` and :class:`~embedder.Reranker` share: a checkpoint
    loaded in this process, its processors, settings and preprocessing threads."""

    HEAD = False          # load the LM head too (the reranker scores with it)
    MAX_LENGTH = 8192     # tokens per sequence
    THREAD_PREFIX = "qvl-prep"

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, video_processor: Any, device: Any, *,
                 max_batch_tokens: int | None = None, max_length: int | None = None,
                 load_options: LoadOptions = LoadOptions(), num_workers: int = 2, name: str = "",
                 min_fill: float | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.video_processor = video_processor
        self.device = device
        self.max_batch_tokens = default_max_batch_tokens(device) if max_batch_tokens is None else int(max_batch_tokens)
        self.max_length = int(self.MAX_LENGTH if max_length is None else max_length)
        self.load_options = load_options
        self.name = name
        self.min_fill = default_min_fill(device) if min_fill is None else float(min_fill)
        self._pool = ThreadPoolExecutor(max_workers=max(1, num_workers), thread_name_prefix=self.THREAD_PREFIX)
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_pretrained(cls: type[_Model], path_or_id: str, *, device: str = "auto", dtype: Any = "auto",
                        attn_implementation: str | None = None, max_batch_tokens: int | None = None,
                        allow_urls: bool | None = None, allow_paths: bool | None = None, num_workers: int = 2,
                        load_options: LoadOptions | None = None, **kwargs: Any) -> _Model:
        """Load a checkpoint (Qwen3-VL-Embedding or Qwen3-Embedding for an Embedder, the
        -Reranker ones for a Reranker). The kind is read from ``config.json``'s
        ``architectures``, never from the name: a text-only checkpoint gives the text
        implementation (:mod:`embedder.text`), a subclass with the same API.

        Args:
            path_or_id: local directory, or hub id such as ``Qwen/Qwen3-VL-Embedding-2B``.
            device: ``auto`` (CUDA, then MPS, then CPU), or any torch device string.
            dtype: ``auto`` (bf16 on CUDA; on a CPU bf16 where the processor multiplies it
                natively and it is faster, else float32: :mod:`embedder.cpu`) or a torch dtype /
                its name; ``float32`` gives the release's exact CPU vectors.
            attn_implementation: ``flash_attention_2``, ``sdpa`` or ``eager``; default picks
                flash-attention-2 on CUDA when installed, else SDPA.
            max_batch_tokens: padded tokens per forward pass (default: 4096 on CPU, 16384 on GPU).
            allow_urls: let items name ``http(s)://`` images and videos (default off).
            allow_paths: let items name local files (default on).
            num_workers: preprocessing threads.
            load_options: media permissions and limits (:class:`~embedder.items.LoadOptions`:
                pixel, video, text and URL limits, ``allow_video``); ``allow_urls`` and
                ``allow_paths``, when given, override its fields.
            **kwargs: passed to ``transformers``' ``from_pretrained`` (e.g. ``revision``).

        Raises:
            ModelLoadError: the checkpoint cannot be found or does not load every weight.
            MissingDependencyError: torch / transformers are not installed (the ``local`` extra).
        """
        model, tok, ip, vp, dev = load_model(path_or_id, head=cls.HEAD, device=device, dtype=dtype,
                                             attn_implementation=attn_implementation, **kwargs)
        impl = cls.implementation(getattr(model, "qvl_modality", "vl"))
        return impl(model, tok, ip, vp, dev, max_batch_tokens=max_batch_tokens,
                   load_options=with_permissions(load_options, allow_urls=allow_urls, allow_paths=allow_paths),
                   num_workers=num_workers, name=str(path_or_id))

    @classmethod
    def implementation(cls, modality: str) -> type:
        """The class that runs a checkpoint of this modality (``"vl"`` or ``"text"``): an
        ``Embedder`` loading a Qwen3-Embedding checkpoint becomes a ``TextEmbedder``."""
        return cls

    @property
    def dtype(self) -> str:
        """The precision the model computes in: ``"float32"``, ``"bfloat16"`` or ``"float16"``
        (:attr:`dtype_reason` says why). In bf16 on a CPU the final norm, the pooled state, the
        L2 normalisation and the reranker's yes/no difference are float32."""
        return str(getattr(self.model, "dtype", "float32")).replace("torch.", "")

    @property
    def dtype_reason(self) -> str:
        """Why :attr:`dtype` was chosen: asked for, the device's default, or the CPU probe and calibration."""
        return str(getattr(self.model, "qvl_dtype_reason", "") or f"{self.dtype}: as loaded")

    def close(self) -> None:
        """Stop the preprocessing threads. Idempotent."""
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=False, cancel_futures=True)


def linear_patch_embed(model) -> None:
    """Run the vision tower's patch embedding as the matrix product it is.

    Its ``Conv3d`` has kernel = stride = the whole patch, so each output is one dot
    product of a flattened patch with a flattened filter; oneDNN's convolution takes 7x
    longer than the same product as a ``linear`` on a CPU (2.2 s against 0.3 s for 100
    mixed documents' 27k patches). Same weights (state dict unchanged) and the same sums,
    up to float rounding.
    """
    import torch
    import torch.nn.functional as F

    embed = getattr(getattr(getattr(model, "model", model), "visual", None), "patch_embed", None)
    proj = getattr(embed, "proj", None)
    if (not isinstance(proj, torch.nn.Conv3d) or tuple(proj.stride) != tuple(proj.kernel_size)
            or any(proj.padding) or set(proj.dilation) != {1} or proj.groups != 1
            or hasattr(type(embed), "stock_class")):
        return  # not the shape this rewrite is exact for, or already rewritten

    class LinearPatchEmbed(type(embed)):  # type: ignore[misc]
        stock_class = type(embed)  # transformers' module, for comparisons (embedder.testing.stock_patch_embed)

        def forward(self, hidden_states):
            weight = self.proj.weight
            patches = hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype)
            return F.linear(patches, weight.reshape(weight.shape[0], -1), self.proj.bias)

    embed.__class__ = LinearPatchEmbed


def fp32_final_norm(model) -> None:
    """Run the text model's final RMSNorm in float32 and return float32 (bf16 on a CPU).

    transformers' RMSNorm already computes its statistics in float32 but rounds its output
    back to the input dtype; this last norm's output is the state the embedder pools and
    the reranker scores, so in bf16 it stays float32 (its weight too: exact for bf16
    checkpoints). Every other layer keeps the model's dtype.
    """
    backbone = getattr(model, "model", model)
    text = getattr(backbone, "language_model", backbone)  # a text-only Qwen3Model is its own language model
    norm = getattr(text, "norm", None)
    if norm is None or hasattr(type(norm), "stock_class"):
        return  # no such module, or already rewritten

    class Fp32FinalNorm(type(norm)):  # type: ignore[misc]
        stock_class = type(norm)

        def forward(self, hidden_states):
            return super().forward(hidden_states.float())

    norm.float()
    norm.__class__ = Fp32FinalNorm


def _load_video_processor(source: str):
    try:
        from transformers import AutoVideoProcessor

        return AutoVideoProcessor.from_pretrained(source)
    except (ImportError, OSError, ValueError) as exc:  # torchvision missing or no config
        raise ModelLoadError(f"cannot load the video processor of {source!r}: {exc}") from exc


@dataclass
class Media:
    """Visual content of one side (item) ready for the model, with its prompt blocks."""

    video_blocks: list[str] = field(default_factory=list)
    image_blocks: list[str] = field(default_factory=list)
    pixel_values: Any = None          # images, in prompt order
    image_grid_thw: Any = None
    pixel_values_videos: Any = None   # videos, in prompt order
    video_grid_thw: Any = None


def encode_media(item: Item, options: LoadOptions, image_processor, video_processor) -> Media:
    """Load, size and patchify an item's images and videos (spec points 7 and 8)."""
    media = Media()
    if item.videos:
        if item.fps is not None or item.max_frames is not None:
            options = dataclasses.replace(options, fps=item.fps or options.fps,
                                          max_frames=item.max_frames or options.max_frames)
        from .video import load_video

        loaded = [load_video(v, options) for v in item.videos]
        out = video_processor(videos=[lv.frames for lv in loaded], do_resize=False, do_sample_frames=False,
                              cap_pixels_per_frame=False, return_tensors="pt")
        media.pixel_values_videos = out["pixel_values_videos"]
        media.video_grid_thw = out["video_grid_thw"]
        for lv, grid in zip(loaded, media.video_grid_thw.tolist()):
            media.video_blocks.append(video_placeholder(grid, lv.timestamps))
    if item.images:
        images = [load_image(src, options) for src in item.images]
        out = image_processor(images=images, do_resize=False, return_tensors="pt")
        media.pixel_values = out["pixel_values"]
        media.image_grid_thw = out["image_grid_thw"]
        media.image_blocks = [image_placeholder(g) for g in media.image_grid_thw.tolist()]
    return media


@dataclass
class Prepared:
    """One sequence ready to batch: token ids plus the media its pad tokens stand for."""

    input_ids: list[int]
    media: list[Media]

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


def collate(prepared: Sequence[Prepared], *, pad_id: int, left_pad: bool, device) -> dict:
    """Pad a batch (right for the embedder, left for the reranker) and stack its media."""
    import torch

    width = max(p.n_tokens for p in prepared)
    ids = torch.full((len(prepared), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prepared), width), dtype=torch.long)
    for row, p in enumerate(prepared):
        seq = torch.tensor(p.input_ids, dtype=torch.long)
        if left_pad:
            ids[row, width - len(seq):] = seq
            mask[row, width - len(seq):] = 1
        else:
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
    types = torch.zeros_like(ids, dtype=torch.int32)
    types[ids == IMAGE_PAD_ID] = 1
    types[ids == VIDEO_PAD_ID] = 2
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "mm_token_type_ids": types.to(device)}
    medias = [m for p in prepared for m in p.media]
    for key, grid_key in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
        parts = [getattr(m, key) for m in medias if getattr(m, key) is not None]
        if parts:
            batch[key] = torch.cat(parts, dim=0).to(device)
            batch[grid_key] = torch.cat([getattr(m, grid_key) for m in medias if getattr(m, key) is not None],
                                        dim=0).to(device)
    return batch


def run_backbone(model, batch: dict, **kwargs: Any):
    """Run the ``Qwen3VLModel`` backbone (no LM head) on a collated batch."""
    backbone = getattr(model, "model", model)
    inputs = dict(batch)
    dtype = next(backbone.parameters()).dtype
    for key in ("pixel_values", "pixel_values_videos"):
        if key in inputs:
            inputs[key] = inputs[key].to(dtype)
    kwargs.setdefault("use_cache", False)
    return backbone(**inputs, **kwargs)


def last_hidden_state(model, batch: dict):
    """The final-norm hidden states (spec embedder point 1)."""
    return run_backbone(model, batch).last_hidden_state


def rope_positions(backbone, prepared: Prepared, *, device) -> Any:
    """The (3, length) multimodal rope positions of one unpadded sequence."""
    import torch

    ids = torch.tensor([prepared.input_ids], dtype=torch.long, device=device)
    grids = {}
    for key, grid_key in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
        parts = [getattr(m, grid_key) for m in prepared.media if getattr(m, key) is not None]
        grids[grid_key] = torch.cat(parts, dim=0).to(device) if parts else None
    if grids["image_grid_thw"] is None and grids["video_grid_thw"] is None:
        return torch.arange(ids.shape[1], device=device).expand(3, -1)
    types = torch.zeros_like(ids, dtype=torch.int32)
    types[ids == IMAGE_PAD_ID] = 1
    types[ids == VIDEO_PAD_ID] = 2
    positions, _ = backbone.get_rope_index(ids, mm_token_type_ids=types, **grids)
    return positions[:, 0]
