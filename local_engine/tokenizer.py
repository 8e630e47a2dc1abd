"""Tokenisation, chat templates, and streaming detokenisation with stop strings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from local_engine.errors import InvalidRequestError, ModelLoadError

# a hub name must fail at once, not retry for a minute: set before transformers is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class Tokenizer:
    """The model directory's own tokenizer.json and chat template.

    Loaded as a plain PreTrainedTokenizerFast: AutoTokenizer may rebuild a family's
    pre-tokenizer in code, while the file is what the model was trained with.
    """

    def __init__(self, model_dir: Path) -> None:
        if not (model_dir / "tokenizer.json").is_file():
            raise ModelLoadError(f"{model_dir}: tokenizer.json not found")
        from transformers import PreTrainedTokenizerFast

        self.hf: Any = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
        self.eos_token_id: int | None = self.hf.eos_token_id

    def __len__(self) -> int:
        return len(self.hf)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, token_ids: list[int]) -> str:
        return str(self.hf.decode(token_ids, skip_special_tokens=True))

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> list[int]:
        if not self.hf.chat_template:
            raise InvalidRequestError("this model has no chat template; use /v1/completions", "messages")
        try:
            text = self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # a template raising on odd input is the request's fault
            raise InvalidRequestError(f"chat template failed: {exc}", "messages") from exc
        # the template writes any BOS itself
        return self.encode(str(text), add_special_tokens=False)


class IncrementalDetokenizer:
    """Turns one token at a time into text without splitting a multi-byte character.

    Decodes a short window twice, with and without the newest tokens, and emits the
    difference; while the window ends in U+FFFD (half of a UTF-8 sequence) it waits for the
    next token. A few prompt tokens seed the window so a leading space is kept.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.ids = list(prompt_ids[-6:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        after = self.tokenizer.decode(self.ids[self.prefix_offset :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        return after[len(before) :]

    def flush(self) -> str:
        """Text still held back at the end (an unfinished character decodes as U+FFFD)."""
        before = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        after = self.tokenizer.decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return after[len(before) :]


class TextStream:
    """The text of one choice: detokenised, cut at the first stop string, released in deltas.

    A tail that could still grow into a stop string is held back until it cannot.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int], stop: list[str]) -> None:
        self.detokenizer = IncrementalDetokenizer(tokenizer, prompt_ids)
        self.stop = stop
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> bool:
        """Add a token; True when a stop string appeared (the text is cut before it)."""
        delta = self.detokenizer.push(token_id)
        if not delta or not self.stop:
            self.text += delta
            return False
        search_from = max(0, len(self.text) - max(len(s) for s in self.stop) + 1)
        self.text += delta
        hits = [i for i in (self.text.find(s, search_from) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
        return self.stopped

    def take(self, final: bool) -> str:
        if final and not self.stopped:
            self.text += self.detokenizer.flush()
        end = len(self.text) if final or self.stopped else len(self.text) - self._held_back()
        delta = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return delta

    def _held_back(self) -> int:
        held = 0
        for stop in self.stop:
            for k in range(min(len(stop) - 1, len(self.text)), held, -1):
                if self.text.endswith(stop[:k]):
                    held = k
                    break
        return held
