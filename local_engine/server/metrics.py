"""Prometheus text exposition of the engine's counters and gauges (no client library)."""

from __future__ import annotations

from local_engine.engine.llm_engine import LLMEngine


def render_metrics(engine: LLMEngine) -> str:
    bm = engine.block_manager
    sched = engine.scheduler
    stats = engine.stats
    # read without the engine lock: each value is one attribute read, so at worst a step stale
    rows: list[tuple[str, str, str, float, str]] = [
        ("requests_running", "gauge", "Sequences in the running batch", len(sched.running), ""),
        ("requests_waiting", "gauge", "Sequences waiting for admission", len(sched.waiting), ""),
        ("kv_blocks_total", "gauge", "KV-cache blocks", bm.num_blocks, ""),
        ("kv_blocks_free", "gauge", "KV-cache blocks free (cached or empty)", bm.num_free_blocks, ""),
        ("kv_cache_usage", "gauge", "Fraction of KV blocks in use", 1 - bm.num_free_blocks / bm.num_blocks, ""),
        ("prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache",
         bm.prefix_query_tokens, ""),
        ("prefix_cache_hits_total", "counter", "Prompt tokens served from the prefix cache",
         bm.prefix_hit_tokens, ""),
        ("preemptions_total", "counter", "Sequences preempted for recompute", sched.num_preemptions, ""),
        ("prompt_tokens_total", "counter", "Prompt tokens admitted", stats.prompt_tokens, ""),
        ("generation_tokens_total", "counter", "Tokens generated", stats.generation_tokens, ""),
        ("steps_total", "counter", "Engine steps run", stats.steps, ""),
    ]
    for reason, count in sorted(stats.finish_reasons.items()):
        rows.append(("requests_finished_total", "counter", "Finished sequences by reason", count,
                     f'{{finish_reason="{reason}"}}'))
    lines: list[str] = []
    seen: set[str] = set()
    for name, kind, help_text, value, labels in rows:
        full = f"tollgate_engine_{name}"
        if full not in seen:
            seen.add(full)
            lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} {kind}")
        lines.append(f"{full}{labels} {value:g}" if isinstance(value, float) else f"{full}{labels} {value}")
    return "\n".join(lines) + "\n"
