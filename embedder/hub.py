"""The Hugging Face Hub side of loading a checkpoint: fail fast when it cannot be had.

:func:`check_hub_reachable` runs before every load (:func:`embedder.model.load_model`),
so a machine without network learns in one line, at once, what to do instead of waiting
through transformers' retries. :func:`quiet_model_loading` is for entry points (the
``qvl`` commands), never called on import.
"""
from __future__ import annotations

import os
from typing import Any

from .errors import ModelLoadError


def check_hub_reachable(spec: str, *, timeout: float = 5.0) -> None:
    """Fail at once, in one line, when ``spec`` is a hub id that is not cached and the hub cannot be reached.

    A local folder, or a hub id whose ``config.json`` is in the local cache, passes
    without touching the network. Otherwise one quick request tells a machine without
    network (or with ``HF_HUB_OFFLINE=1``) from one that can download, instead of
    transformers' retries (about 30 s) and their doubled warnings.

    Raises:
        ModelLoadError: not cached and no network; the message says what to do.
    """
    if os.path.isdir(spec) or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        return  # a folder, or not a hub id (the loader explains that)
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a dependency of transformers
        return
    try:
        cached = huggingface_hub.try_to_load_from_cache(spec, "config.json")
    except Exception:  # noqa: BLE001 - an odd cache only means "look it up"
        cached = None
    if isinstance(cached, str):
        return
    offline = bool(getattr(constants, "HF_HUB_OFFLINE", False))
    reason = "HF_HUB_OFFLINE is set"
    if not offline:
        try:
            huggingface_hub.model_info(spec, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - only network failures count here
            names = {c.__name__ for c in type(exc).__mro__}
            if names & {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "TransportError",
                        "ConnectionError", "Timeout", "OfflineModeIsEnabled", "TimeoutError", "OSError"} and \
                    not names & {"HfHubHTTPError", "RepositoryNotFoundError", "GatedRepoError"}:
                offline, reason = True, "the Hugging Face Hub cannot be reached"
    if offline:
        raise ModelLoadError(
            f"{spec} is neither a local folder nor in the local cache, and {reason}: download it on a connected "
            f"machine (hf download {spec} --local-dir DIR), copy DIR here and load it from there (qvl: --model DIR "
            "or --reranker DIR); or try everything offline with `qvl demo --offline-test-model` (random weights)")


def quiet_model_loading() -> None:
    """Hide transformers' "Loading weights" progress bar (download bars stay). For entry points only."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return

    def hook(factory: Any, args: tuple, kwargs: dict) -> Any:
        if kwargs.get("desc") == "Loading weights":
            kwargs = dict(kwargs, disable=True)
        return factory(*args, **kwargs)

    hf_logging.set_tqdm_hook(hook)
