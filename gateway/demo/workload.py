"""A generated, realistic mix of traffic, the same for a given seed.

Teams send what teams send: support chats with growing history, help-centre questions
asked again and again in a few wordings, questions about long pasted reports, agents that
send their whole toolbox, document summaries,
tool-using agents, classification jobs nobody waits for, embeddings for search, and
marketing copy from a team on a small budget. Each later cost stage has traffic here that
it can act on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

_PRODUCTS = [
    "invoice export",
    "SSO login",
    "webhook retries",
    "usage dashboard",
    "billing alerts",
    "CSV import",
]
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
# What an operations report says, week by week: long documents a question is asked about.
_REPORT_LINES = [
    "In week {w}, the {product} team shipped {k} fixes and closed {m} support tickets.",
    "Latency for {product} at the 99th percentile was {ms} ms in week {w}.",
    "The on-call engineer for {product} was paged {k} times in week {w}, mostly at night.",
    "Customers filed {m} feature requests about {product} in week {w}, twice the usual number.",
    "The {product} error rate stayed under {k} per thousand requests throughout week {w}.",
]
# An agent's whole toolbox: far more tools than one request needs.
_TOOLBOX = [
    ("get_order_status", "Look up the shipping status of an order by its id."),
    ("cancel_order", "Cancel an order that has not shipped yet."),
    ("refund_payment", "Refund a captured payment in full or in part."),
    ("update_shipping_address", "Change the delivery address of an open order."),
    ("list_invoices", "List a customer's invoices for a date range."),
    ("send_invoice_email", "Email an invoice PDF to the billing contact."),
    ("create_support_ticket", "Open a support ticket with a subject and description."),
    ("escalate_ticket", "Escalate a support ticket to the on-call engineer."),
    ("reset_password", "Send a password reset link to a user."),
    ("invite_user", "Invite a colleague to a workspace by email."),
    ("remove_user", "Remove a user from a workspace."),
    ("change_plan", "Move a workspace to another subscription plan."),
    ("apply_coupon", "Apply a discount coupon to the next invoice."),
    ("get_usage_report", "Usage of the product by day for a workspace."),
    ("export_csv", "Export a table of records as a CSV file."),
    ("schedule_call", "Book a call with the customer success team."),
    ("translate_text", "Translate a short text into another language."),
    ("search_help_center", "Search the help centre articles by keywords."),
    ("get_weather", "Current weather for a city."),
    ("convert_currency", "Convert an amount between two currencies at today's rate."),
    ("check_sso_config", "Validate a workspace's single sign-on configuration."),
    ("rotate_api_key", "Revoke an API key and issue a new one."),
    ("get_audit_log", "Recent entries of a workspace's audit log."),
    ("set_webhook_url", "Set the URL that receives webhook events."),
    ("retry_webhook", "Send a failed webhook delivery again."),
    ("pause_subscription", "Pause a subscription until a given date."),
    ("track_parcel", "Track a parcel with the carrier's tracking number."),
    ("estimate_delivery", "Estimate the delivery date of an order from its warehouse."),
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
# The toolbox as the agent sends it: the order tool with its full schema, the rest with a bare id.
_TOOLBOX_TOOLS: list[dict[str, Any]] = [_ORDER_TOOL] + [
    {"type": "function", "function": {"name": name, "description": description,
     "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}
    for name, description in _TOOLBOX[1:]
]  # fmt: skip


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
        (0.18, _support_chat),
        (0.10, _summary),
        (0.06, _agent_with_tools),
        (0.12, _classification),
        (0.08, _embeddings),
        (0.14, _campaign_copy),
        (0.14, _help_centre),
        (0.09, _report_question),
        (0.09, _agent_with_toolbox),
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
        messages.append(
            {"role": "assistant", "content": rng.choice(_SENTENCES) + " Could you share the request id?"}
        )
        messages.append(
            {"role": "user", "content": f"Request id req-{rng.randint(1000, 9999)}. {rng.choice(_SENTENCES)}"}
        )
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


def _report_question(rng: random.Random, i: int) -> Call:
    """A specific question about a long report pasted as a document: compression keeps the
    sentences the question needs and drops the rest (research's policy asks for it)."""
    product = rng.choice(_PRODUCTS)
    week = rng.randint(1, 52)
    lines = []
    for _ in range(rng.randint(30, 45)):
        template = rng.choice(_REPORT_LINES)
        lines.append(template.format(w=rng.randint(1, 52), product=rng.choice(_PRODUCTS), k=rng.randint(2, 40),
                                     m=rng.randint(10, 400), ms=rng.randint(80, 900)))  # fmt: skip
    ms = rng.randint(80, 900)
    lines.insert(rng.randrange(len(lines)), _REPORT_LINES[1].format(w=week, product=product, ms=ms, k=0, m=0))
    question = f"What was the 99th-percentile latency of the {product} in week {week}?"
    body = {
        "messages": [
            {"role": "system", "content": "Answer questions about the operations report in one sentence."},
            {"role": "user", "content": f"<document>\n{' '.join(lines)}\n</document>\n\n{question}"},
        ],
        "max_tokens": 60,
        "temperature": 0,
    }
    return Call("research", "chat", "gpt-4o-mini", body, "report question")


def _agent_with_toolbox(rng: random.Random, i: int) -> Call:
    """An agent that sends its whole toolbox every time: tool selection sends the few that fit."""
    order = f"A-{rng.randint(10000, 99999)}"
    body = {
        "messages": [
            {"role": "system", "content": "You are an order assistant. Use tools to answer."},
            {"role": "user", "content": f"Where is my parcel for order {order}? When will it arrive?"},
        ],
        "tools": list(_TOOLBOX_TOOLS),
        "max_tokens": 150,
    }
    return Call("support", "tools", "gpt-4o-mini", body, "agent with a toolbox")


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
            {
                "role": "system",
                "content": "Classify the ticket as bug, billing, question or feature. Answer with one word.",
            },
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
            {
                "role": "system",
                "content": "You write short, upbeat release announcements for a B2B SaaS product.",
            },
            {"role": "user", "content": f"Announce the new {product}. {rng.choice(_SENTENCES)}"},
        ],
        "max_tokens": 60,
        "temperature": 0.9,
    }
    return Call("marketing", "chat", "gpt-4o", body, "campaign copy")


def _embeddings(rng: random.Random, i: int) -> Call:
    texts = [rng.choice(_SENTENCES) for _ in range(rng.randint(1, 8))]
    return Call("research", "embeddings", "text-embedding-3-small", {"input": texts}, "search embeddings")
