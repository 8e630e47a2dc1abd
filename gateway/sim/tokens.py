"""Token counts the way the real APIs count them, and OpenAI's automatic prompt caching.

Usage is measured with tiktoken on the actual prompt and answer text, so cost and savings
computed downstream from a simulated call are the ones the same call would really cost.
"""

from __future__ import annotations

import hashlib
import random
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import tiktoken

_O200K_FAMILIES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4")
# Common tokens used as the runners-up in top_logprobs.
_ALTERNATIVES = (" the", " a", ",", " and", " to", " of", " in", " is", ".", " it", " that", " for", " this")


def encoding_for(model: str) -> tiktoken.Encoding:
    """o200k_base for the gpt-4o generation and later, cl100k_base for everything else."""
    name = model.rsplit("/", 1)[-1].lower()
    family = "o200k_base" if name.startswith(_O200K_FAMILIES) else "cl100k_base"
    # tiktoken keeps its own cache of loaded encodings, so this is cheap after the first call.
    return tiktoken.get_encoding(family)


def count(enc: tiktoken.Encoding, text: str) -> int:
    return len(enc.encode(text, disallowed_special=()))


def encode(enc: tiktoken.Encoding, text: str) -> list[int]:
    return enc.encode(text, disallowed_special=())


def truncate(enc: tiktoken.Encoding, text: str, max_tokens: int) -> str:
    """The longest prefix of `text` that encodes to at most `max_tokens` tokens."""
    tokens = encode(enc, text)
    keep = max_tokens
    while True:
        prefix = enc.decode_bytes(tokens[:keep]).decode("utf-8", "ignore")
        # Re-encoding a cut string can merge differently; shrink until usage really fits.
        if count(enc, prefix) <= max_tokens or keep == 0:
            return prefix
        keep -= 1


@dataclass(slots=True, frozen=True)
class Piece:
    """One streamed delta: its text and how many tokens it carries."""

    text: str
    tokens: tuple[int, ...]


def split_pieces(enc: tiktoken.Encoding, text: str, rng: random.Random) -> list[Piece]:
    """Cut text into deltas of 1-3 tokens, never splitting a UTF-8 character between two."""
    tokens = encode(enc, text)
    pieces: list[Piece] = []
    pending_bytes = b""
    pending_tokens: list[int] = []
    i = 0
    while i < len(tokens):
        size = rng.randint(1, 3)
        group = tokens[i : i + size]
        i += size
        pending_bytes += enc.decode_bytes(group)
        pending_tokens.extend(group)
        try:
            piece_text = pending_bytes.decode("utf-8")
        except UnicodeDecodeError:
            continue
        pieces.append(Piece(piece_text, tuple(pending_tokens)))
        pending_bytes, pending_tokens = b"", []
    if pending_tokens:
        pieces.append(Piece(pending_bytes.decode("utf-8", "replace"), tuple(pending_tokens)))
    return pieces


def token_logprobs(
    enc: tiktoken.Encoding, tokens: Sequence[int], top: int, rng: random.Random
) -> list[dict[str, object]]:
    """A plausible `logprobs.content` list: confident tokens, the chosen one ranked first."""
    entries: list[dict[str, object]] = []
    for token in tokens:
        raw = enc.decode_single_token_bytes(token)
        text = raw.decode("utf-8", "replace")
        logprob = -round(rng.expovariate(8.0), 6)
        alternatives: list[dict[str, object]] = [{"token": text, "logprob": logprob, "bytes": list(raw)}]
        lower = logprob
        for alt in rng.sample(_ALTERNATIVES, k=min(len(_ALTERNATIVES), top)):
            if len(alternatives) >= top:
                break
            if alt == text:
                continue
            lower = round(lower - rng.uniform(0.5, 4.0), 6)
            alternatives.append({"token": alt, "logprob": lower, "bytes": list(alt.encode())})
        entries.append(
            {"token": text, "logprob": logprob, "bytes": list(raw), "top_logprobs": alternatives[:top]}
        )
    return entries


class PromptCache:
    """OpenAI's automatic prompt caching, modelled: a bounded LRU of prompt prefixes seen.

    The rule being modelled: only prompts of at least 1024 tokens are cached, and a hit
    covers the longest previously seen prefix, counted in 128-token increments.
    """

    MIN_TOKENS = 1024
    INCREMENT = 128

    def __init__(self, max_entries: int = 16384) -> None:
        self._max_entries = max_entries
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def lookup_and_store(self, namespace: str, tokens: Sequence[int]) -> int:
        """Cached token count for this prompt; afterwards every prefix of it counts as seen."""
        if len(tokens) < self.MIN_TOKENS:
            return 0
        packed = array("I", tokens)
        data, width = packed.tobytes(), packed.itemsize
        hasher = hashlib.blake2b(namespace.encode(), digest_size=16)
        hasher.update(data[: self.MIN_TOKENS * width])
        cached = 0
        end = self.MIN_TOKENS
        digests: list[bytes] = []
        while True:
            digest = hasher.digest()
            digests.append(digest)
            if digest in self._seen:
                cached = end
            if end + self.INCREMENT > len(tokens):
                break
            hasher.update(data[end * width : (end + self.INCREMENT) * width])
            end += self.INCREMENT
        for digest in digests:
            self._seen[digest] = None
            self._seen.move_to_end(digest)
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)
        return cached
