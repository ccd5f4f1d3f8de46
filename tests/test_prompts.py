"""Pinned prompt tokens of the embedder (spec points 3-9) on the real Qwen tokenizer."""
from __future__ import annotations

import pytest

from embedder.prompts import (ENDOFTEXT_ID, IMAGE_PAD_ID, VIDEO_PAD_ID, VISION_END_ID, VISION_START_ID,
                              normalize_instruction)

from .conftest import make_image

SYS = [151644, 8948, 198]                          # <|im_start|>system\n
DEFAULT_INSTR = [65743, 279, 1196, 594, 1946, 13]  # Represent the user's input.
END = [151645, 198]                                # <|im_end|>\n
USER = [151644, 872, 198]                          # <|im_start|>user\n
ASSISTANT = [151644, 77091, 198]                   # <|im_start|>assistant\n
A_DOG = [32, 5562, 13]                             # A dog.
VS, VE, IP, VP = VISION_START_ID, VISION_END_ID, IMAGE_PAD_ID, VIDEO_PAD_ID


def wrap(user: list[int], instruction: list[int] = DEFAULT_INSTR) -> list[int]:
    return SYS + instruction + END + USER + user + END + ASSISTANT + [ENDOFTEXT_ID]


def ids(embedder, item, **kw) -> list[int]:
    return embedder.prepare(item, **kw).input_ids


def test_text(embedder):
    assert ids(embedder, "A dog.") == wrap(A_DOG)
    assert embedder.tokenizer.decode(ids(embedder, "A dog.")) == (
        "<|im_start|>system\nRepresent the user's input.<|im_end|>\n<|im_start|>user\nA dog.<|im_end|>\n"
        "<|im_start|>assistant\n<|endoftext|>")


def test_image_64px_is_four_visual_tokens(embedder):
    assert ids(embedder, make_image(64, 64)) == wrap([VS, IP, IP, IP, IP, VE])


def test_text_and_image_puts_image_first_whatever_the_dict_order(embedder):
    expected = wrap([VS] + [IP] * 4 + [VE] + A_DOG)
    assert ids(embedder, {"text": "A dog.", "image": make_image(64, 64)}) == expected
    assert ids(embedder, {"image": make_image(64, 64), "text": "A dog."}) == expected


def test_two_images_in_order(embedder):
    # 64x64 -> 2x2 merged tokens; 96x64 (w x h) -> 2x3
    got = ids(embedder, {"image": [make_image(64, 64), make_image(96, 64)]})
    assert got == wrap([VS] + [IP] * 4 + [VE] + [VS] + [IP] * 6 + [VE])


def test_small_image_is_upscaled_to_four_tokens_not_to_the_processor_minimum(embedder):
    # The checkpoint's own processor would upscale to >= 65,536 pixels; the release's smart resize
    # keeps 4..1800 tokens.
    assert ids(embedder, make_image(20, 20)).count(IP) == 4


def test_video_frames_use_the_transformers_457_layout(embedder):
    frames = [make_image(64, 64, seed=i) for i in range(4)]
    got = ids(embedder, {"video": frames})
    user = got[len(SYS + DEFAULT_INSTR + END + USER):-len(END + ASSISTANT) - 1]
    # 4 frames are used as given (no repetition to 64, spec point 8): 2 temporal pairs.
    assert user.count(VS) == user.count(VE) == 2
    # No outer <|vision_start|> before the first timestamp (transformers 5.x would add one).
    assert user[0] != VS and user[-1] == VE
    text = embedder.tokenizer.decode(user)
    # Frame lists are taken as 2 fps: pairs (0, 0.5 s) and (1, 1.5 s).
    assert text.startswith("<0.2 seconds><|vision_start|><|video_pad|>")
    assert "<|vision_end|><1.2 seconds><|vision_start|>" in text
    assert text.count("seconds>") == 2
    per_pair = user.count(VP) // 2
    assert user.count(VP) == 2 * per_pair and per_pair > 0
    assert IP not in user


def test_video_then_image_then_text(embedder):
    got = ids(embedder, {"text": "A dog.", "image": make_image(64, 64),
                         "video": [make_image(64, 64, seed=i) for i in range(2)]})
    user = got[len(SYS + DEFAULT_INSTR + END + USER):-len(END + ASSISTANT) - 1]
    last_video = max(i for i, t in enumerate(user) if t == VP)
    first_image = user.index(IP)
    assert last_video < first_image
    assert user[-len(A_DOG):] == A_DOG


def test_instruction_without_final_punctuation_gets_a_period(embedder):
    assert ids(embedder, "A dog.", instruction="Find images") == wrap(A_DOG, [9885, 5335, 13])
    assert ids(embedder, {"text": "A dog.", "instruction": "  Find images  "}) == wrap(A_DOG, [9885, 5335, 13])


@pytest.mark.parametrize("raw, expected", [
    (None, "Represent the user's input."),
    ("", "Represent the user's input."),
    ("   ", "Represent the user's input."),
    ("Find images", "Find images."),
    ("Find images?", "Find images?"),
    ("找图片。", "找图片。"),
    ("Find «images»", "Find «images»"),   # » is Unicode punctuation (Pf)
    ("Find images 2", "Find images 2."),
])
def test_normalize_instruction(raw, expected):
    assert normalize_instruction(raw) == expected


def test_empty_item_is_null_and_empty_string_stays_empty(embedder):
    assert ids(embedder, {}) == wrap([4576])  # NULL
    assert ids(embedder, {"text": ""}) == wrap([])
    assert ids(embedder, "") == wrap([])


def test_over_long_text_keeps_visual_tokens_and_final_endoftext(embedder):
    long_text = "hello " * 9000
    image = make_image(64, 64)
    got = ids(embedder, {"text": long_text, "image": image})
    assert len(got) == embedder.max_length == 8192
    assert got[-1] == ENDOFTEXT_ID
    assert got[-(len(END + ASSISTANT) + 1):] == END + ASSISTANT + [ENDOFTEXT_ID]
    assert got.count(IP) == 4 and got.count(VS) == 1 and got.count(VE) == 1
    assert got[:len(SYS + DEFAULT_INSTR + END + USER)] == SYS + DEFAULT_INSTR + END + USER
    # The text alone is cut too, to exactly the maximum.
    only_text = ids(embedder, long_text)
    assert len(only_text) == 8192 and only_text[-1] == ENDOFTEXT_ID


def test_over_long_text_embeds(embedder):
    import numpy as np

    vec = embedder.embed(["word " * 9000])
    assert vec.shape == (1, embedder.dim) and np.isfinite(vec).all()


def test_tokenizer_of_the_checkpoint_appends_endoftext(embedder):
    # The embedding checkpoint's tokenizer appends <|endoftext|> itself (spec point 6); our
    # prompts do not rely on it.
    assert embedder.tokenizer("hi")["input_ids"][-1] == ENDOFTEXT_ID
