"""What every answer cache shares: keys, stored answers, client controls and storage.

- `keys`: the exact key of a request, whether it is deterministic, and for similarity
  caches the fingerprint of a conversation without its last question.
- `answer`: `CachedAnswer`, stored in the internal OpenAI format and replayed as JSON or SSE.
- `recorder`: `keep_answer`, which hands a cache the answer once the client has it (one
  recording, `AnswerRecorder`, for every cache that keeps the same stream).
- `serve`: `read_answer` (a stored entry, or a miss) and `replay` (a hit served).
- `controls`: `Cache-Control` and `x-tollgate-cache` as read/write/only-if-cached.
- `storage`: `CacheStorage`, entries with a TTL and a byte bound per namespace, written and
  evicted off the response path, on any store backend.
- `versions`: `AnswerVersions`, the config (later stages, the alias's deployments) an answer
  depends on, hashed into every key.
"""

from gateway.cache.answer import CachedAnswer, ReplayStream
from gateway.cache.controls import AGE_HEADER, CACHE_HEADER, DEFAULT, CacheControls, parse_controls
from gateway.cache.keys import context_fingerprint, deterministic, exact_key, last_user_text
from gateway.cache.recorder import AnswerRecorder, assemble, keep_answer
from gateway.cache.serve import read_answer, replay
from gateway.cache.storage import CacheStorage

__all__ = [
    "AGE_HEADER",
    "CACHE_HEADER",
    "DEFAULT",
    "AnswerRecorder",
    "CacheControls",
    "CacheStorage",
    "CachedAnswer",
    "ReplayStream",
    "assemble",
    "context_fingerprint",
    "deterministic",
    "exact_key",
    "keep_answer",
    "last_user_text",
    "parse_controls",
    "read_answer",
    "replay",
]
