"""A generated, realistic mix of traffic, the same for a given seed.

Teams send what teams send: support chats with growing history, help-centre questions
asked again and again in a few wordings, document summaries,
tool-using agents, classification jobs nobody waits for, embeddings for search, and
marketing copy from a team on a small budget. Each later cost stage has traffic here that
it can act on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

_PRODUCTS = ["invoice export", "SSO login", "webhook retries", "usage dashboard", "billing alerts", "CSV import"]
_PROBLEMS = [
    "fails with a timeout after about thirty seconds",
    "shows the wrong currency for customers in Europe",
    "stopped working after yesterday's release",
    "returns a 403 for admins who were just invited",
    "duplicates every row when the file has a header",
]
_TOPICS = [
    "the quarterly infrastructure review",
    "the incident report for the payment outage",
    "the onboarding guide for new support engineers",
    "the data retention policy",
    "the migration plan from the old billing system",
]
_SENTENCES = [
    "The team agreed to keep the current architecture for another quarter.",
    "Latency at the 99th percentile rose by 40 ms after the cache was disabled.",
    "Three customers reported the issue before monitoring caught it.",
    "The rollback took eleven minutes because the runbook was out of date.",
    "Costs fell by 18% once idle replicas were scaled to zero overnight.",
    "Every change to the schema now needs a second reviewer.",
    "The vendor contract renews in March and includes a price increase.",
    "Support tickets about login problems doubled during the migration week.",
]
# Help-centre questions, each as customers word it: the first wording, then paraphrases.
_FAQ = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("Which payment methods do you accept?", "What payment methods do you accept?"),
    ("How do I add a colleague to my workspace?", "How can I add a colleague to my workspace?"),
    ("Can I change the currency of my account?", "Is it possible to change the currency of my account?"),
    ("How do I export my invoices as a CSV file?", "How can I export my invoices as a CSV file?"),
    ("Where can I download last month's invoice?", "Where do I download last month's invoice?"),
]
_ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order_status",
        "description": "Look up the shipping status of an order by its id.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "include_items": {"type": "boolean"}},
            "required": ["order_id"],
        },
    },
}


@dataclass(frozen=True, slots=True)
class Call:
    team: str
    kind: str  # chat | stream | tools | embeddings
    model: str
    body: dict[str, Any] = field(default_factory=dict)
    label: str = ""


def build_workload(n: int, seed: int) -> list[Call]:
    rng = random.Random(seed)
    calls: list[Call] = []
    makers = [
        (0.20, _support_chat),
        (0.14, _summary),
        (0.10, _agent_with_tools),
        (0.14, _classification),
        (0.10, _embeddings),
        (0.16, _campaign_copy),
        (0.16, _help_centre),
    ]
    weights = [w for w, _ in makers]
    for i in range(n):
        maker = rng.choices([m for _, m in makers], weights=weights)[0]
        calls.append(maker(rng, i))
    return calls


def _support_chat(rng: random.Random, i: int) -> Call:
    product, problem = rng.choice(_PRODUCTS), rng.choice(_PROBLEMS)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a concise, friendly support agent for a B2B SaaS product."},
        {"role": "user", "content": f"Our {product} {problem}. What should we check first?"},
    ]
    for _turn in range(rng.randint(0, 3)):
        messages.append({"role": "assistant", "content": rng.choice(_SENTENCES) + " Could you share the request id?"})
        messages.append({"role": "user", "content": f"Request id req-{rng.randint(1000, 9999)}. {rng.choice(_SENTENCES)}"})
    stream = rng.random() < 0.6
    body: dict[str, Any] = {"messages": messages, "max_tokens": 200, "temperature": 0.3}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return Call("support", "stream" if stream else "chat", "assistant", body, "support chat")


def _help_centre(rng: random.Random, i: int) -> Call:
    """The same few questions again and again, in a couple of wordings: what caches are for."""
    wording = rng.choice(rng.choice(_FAQ))
    body = {
        "messages": [
            {"role": "system", "content": "You answer customers' questions from the help centre, briefly."},
            {"role": "user", "content": wording},
        ],
        "max_tokens": 120,
        "temperature": 0,
    }
    return Call("support", "chat", "gpt-4o-mini", body, "help-centre question")


def _summary(rng: random.Random, i: int) -> Call:
    topic = rng.choice(_TOPICS)
    document = " ".join(rng.choice(_SENTENCES) for _ in range(rng.randint(20, 60)))
    body = {
        "messages": [
            {"role": "system", "content": "Summarise documents for busy executives in five bullet points."},
            {"role": "user", "content": f"Summarise {topic}:\n\n{document}"},
        ],
        "max_tokens": 300,
    }
    return Call("research", "chat", "gpt-4o", body, "document summary")


def _agent_with_tools(rng: random.Random, i: int) -> Call:
    order = f"A-{rng.randint(10000, 99999)}"
    body = {
        "messages": [
            {"role": "system", "content": "You are an order assistant. Use tools to answer."},
            {"role": "user", "content": f"Where is my order {order}? Please call get_order_status."},
        ],
        "tools": [_ORDER_TOOL],
        "tool_choice": "auto",
        "max_tokens": 150,
    }
    return Call("support", "tools", "gpt-4o-mini", body, "agent tool call")


def _classification(rng: random.Random, i: int) -> Call:
    ticket = f"{rng.choice(_PRODUCTS).capitalize()} {rng.choice(_PROBLEMS)}."
    body = {
        "messages": [
            {"role": "system", "content": "Classify the ticket as bug, billing, question or feature. Answer with one word."},
            {"role": "user", "content": ticket},
        ],
        "max_tokens": 5,
        "temperature": 0,
    }
    return Call("analytics", "chat", "claude-haiku-4-5", body, "ticket classification")


def _campaign_copy(rng: random.Random, i: int) -> Call:
    product = rng.choice(_PRODUCTS)
    body = {
        "messages": [
            {"role": "system", "content": "You write short, upbeat release announcements for a B2B SaaS product."},
            {"role": "user", "content": f"Announce the new {product}. {rng.choice(_SENTENCES)}"},
        ],
        "max_tokens": 60,
        "temperature": 0.9,
    }
    return Call("marketing", "chat", "gpt-4o", body, "campaign copy")


def _embeddings(rng: random.Random, i: int) -> Call:
    texts = [rng.choice(_SENTENCES) for _ in range(rng.randint(1, 8))]
    return Call("research", "embeddings", "text-embedding-3-small", {"input": texts}, "search embeddings")
