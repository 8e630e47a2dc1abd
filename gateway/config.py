"""The gateway's one YAML file: typed, `${ENV}`-interpolated, unknown keys rejected.

Every error names the dotted path of the bad key (`models.gpt-4o.deployments[0].api_base`),
so a typo fails at load time instead of being silently ignored at request time.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.compress.settings import CompressStageConfig
from gateway.context.settings import HistoryConfig, PruneToolResultsConfig, ToolSelectionConfig
from policies.loading import describe_validation_error

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Providers reached over the OpenAI wire format directly (the fast path) and their default base URL.
OPENAI_COMPATIBLE_BASES: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together": "https://api.together.xyz/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openai_compat": "",
    # Our own engine (local_engine): OpenAI wire, tenant-salted prefix cache, priced per GPU-hour.
    "local": "",
}
# Providers reached through litellm's translation (the value is litellm's model prefix).
LITELLM_PROVIDERS: dict[str, str] = {
    "anthropic": "anthropic",
    "gemini": "gemini",
    "vertex_ai": "vertex_ai",
    "bedrock": "bedrock",
    "cohere": "cohere",
    "mistral": "mistral",
    "azure": "azure",
    "litellm": "",
}
ProviderKind = Literal[
    "sim", "local", "openai", "groq", "together", "deepseek", "openai_compat",
    "anthropic", "gemini", "vertex_ai", "bedrock", "cohere", "mistral", "azure", "litellm",
]  # fmt: skip
# How a deployment is chosen among an alias's healthy ones (docs/balancing.md).
Strategy = Literal["weighted", "least_outstanding", "latency"]


class ConfigError(Exception):
    """A config that cannot be used; the message names every bad key by its dotted path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceOverride(_Strict):
    """USD per million tokens; overrides litellm's price map for one deployment.

    An optional rate left out falls back to the plain one: cache reads and writes cost the
    input rate, batch requests the online rates (no discount is assumed).
    """

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    batch_input_per_mtok: Decimal | None = None
    batch_output_per_mtok: Decimal | None = None


class Deployment(_Strict):
    provider: ProviderKind
    # The upstream's model name; "*" (only under a wildcard alias) forwards the requested name.
    model: str
    api_base: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    weight: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=600.0, gt=0)
    price: PriceOverride | None = None
    # Extra fields merged into every request body sent to this deployment.
    extra_body: dict[str, Any] = Field(default_factory=dict)
    # Self-hosted pricing (provider local): what the GPU costs and what it measurably serves.
    gpu_hour_usd: Decimal | None = Field(default=None, ge=0)
    input_tokens_per_s: float | None = Field(default=None, gt=0)
    output_tokens_per_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _needs_base(self) -> Deployment:
        if self.provider in ("openai_compat", "local") and not self.api_base:
            raise ValueError(f"provider {self.provider} needs api_base")
        if self.gpu_hour_usd is not None and (self.input_tokens_per_s is None or self.output_tokens_per_s is None):
            raise ValueError("gpu_hour_usd needs input_tokens_per_s and output_tokens_per_s (measured throughput)")
        if self.gpu_hour_usd is not None and self.price is not None:
            raise ValueError("give either price or gpu_hour_usd, not both")
        return self

    def effective_price(self) -> PriceOverride | None:
        """The deployment's own price: explicit, or derived from GPU-hour cost and throughput.

        A GPU-second buys `tokens_per_s` tokens, so a token costs gpu_hour / 3600 / tokens_per_s.
        Prefix-cache hits cost no compute and are priced at zero.
        """
        if self.price is not None or self.gpu_hour_usd is None:
            return self.price
        assert self.input_tokens_per_s is not None and self.output_tokens_per_s is not None
        per_second = self.gpu_hour_usd / 3600
        million = Decimal(1_000_000)
        return PriceOverride(
            input_per_mtok=per_second / Decimal(str(self.input_tokens_per_s)) * million,
            output_per_mtok=per_second / Decimal(str(self.output_tokens_per_s)) * million,
            cached_input_per_mtok=Decimal(0),
        )

    def resolved_api_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return None

    def resolved_api_base(self) -> str | None:
        if self.api_base:
            return self.api_base.rstrip("/")
        base = OPENAI_COMPATIBLE_BASES.get(self.provider)
        return base or None


class RouteSpec(_Strict):
    """A routed alias: the route stage sends each request to one of `candidates`, strongest
    first (docs/routing.md). With the stage off, or no rule or router choosing, it is served
    as its strongest candidate."""

    candidates: list[str] = Field(min_length=2)
    # A router trained with `tollgate router train`; without one only the rules route.
    router: str | None = None
    # The share of the strongest candidate's quality to keep (a team's policy may set its own).
    target: float = Field(default=0.95, gt=0, le=1)
    # Prompts longer than this (tokens) always go to the strongest candidate.
    long_prompt_tokens: int | None = Field(default=None, gt=0)


class ModelAlias(_Strict):
    # Empty only for a routed alias, which is served by its candidates' deployments.
    deployments: list[Deployment] = Field(default_factory=list)
    # Other aliases tried, in order, when every deployment of this one has failed.
    fallbacks: list[str] = Field(default_factory=list)
    route: RouteSpec | None = None
    # How a deployment of this alias is chosen; unset: `router.strategy` (docs/balancing.md).
    strategy: Strategy | None = None

    @model_validator(mode="after")
    def _served_somehow(self) -> ModelAlias:
        if self.route is None and not self.deployments:
            raise ValueError("deployments: at least one deployment is needed (or a route)")
        if self.route is not None and self.deployments:
            raise ValueError("a routed alias is served by its candidates: give 'route' or 'deployments', not both")
        if self.route is not None and self.fallbacks:
            raise ValueError(
                "a routed alias falls back to its other candidates: give 'route' or 'fallbacks', not both"
                " (list further aliases as candidates, or as fallbacks of the candidates)"
            )
        return self


class RouterConfig(_Strict):
    retries: int = Field(default=2, ge=0, le=10)
    backoff_base_s: float = Field(default=0.25, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    # A retry-after longer than this is not waited out: the next deployment or fallback is tried.
    max_retry_after_s: float = Field(default=10.0, ge=0)
    cooldown_s: float = Field(default=30.0, ge=0)
    failures_before_cooldown: int = Field(default=3, ge=1)
    # How a deployment is chosen among an alias's healthy ones (docs/balancing.md).
    strategy: Strategy = "weighted"
    # `latency`: the weight of the newest sample in each deployment's moving average, and the
    # share of requests sent to a deployment other than the fastest, so a recovered one is noticed.
    latency_smoothing: float = Field(default=0.3, gt=0, le=1)
    latency_exploration: float = Field(default=0.05, ge=0, le=1)
    # A prompt too long for the model is tried on the alias's fallbacks instead of refused at once.
    fallback_on_context_overflow: bool = True


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=4000, ge=0, le=65535)
    master_key: str | None = None
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class StoreConfig(_Strict):
    backend: Literal["memory", "sqlite", "redis"] = "sqlite"
    path: str = "tollgate.db"
    url: str = "redis://127.0.0.1:6379/0"
    max_connections: int = Field(default=64, gt=0)


class LedgerConfig(_Strict):
    """Where request rows wait between the response and the store."""

    # Each row is appended to a spool file (one write, no fsync) before the response leaves,
    # so rows survive a killed process and a store outage; a restart replays what was not yet
    # stored. The directory defaults to `<sqlite path>-spool`, or `tollgate-spool` beside a
    # Redis-backed gateway; the memory store keeps no spool (it forgets everything anyway).
    spool: bool = True
    spool_dir: str | None = None
    flush_interval_s: float = Field(default=0.05, gt=0)


class TelemetryConfig(_Strict):
    """OpenTelemetry traces and metrics, and Prometheus exposition.

    Exporters are chosen by the standard `OTEL_*` variables (OTEL_TRACES_EXPORTER,
    OTEL_METRICS_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL ...).
    """

    enabled: bool = True
    service_name: str = "tollgate"
    # Prompt and completion text on spans: off unless asked for (it is the customer's data).
    capture_content: bool = False
    # `/metrics` in the Prometheus text format.
    prometheus: bool = True


class SimConfig(_Strict):
    """The in-process simulated provider, serving every `sim/<name>` model."""

    enabled: bool = True
    ttft_ms: float = Field(default=0.0, ge=0)
    tokens_per_s: float = Field(default=0.0, ge=0)
    latency_ms: float = Field(default=0.0, ge=0)
    fault: str | None = None
    fault_rate: float = Field(default=0.0, ge=0, le=1)
    # Batch APIs: a batch ends batch_delay_s after creation, or expires batch_expire_s after it (None:
    # the real 24 h) if that is sooner; batch_failure_rate fails that share of requests, by custom_id.
    batch_delay_s: float = Field(default=2.0, ge=0)
    batch_expire_s: float | None = Field(default=None, gt=0)
    batch_failure_rate: float = Field(default=0.0, ge=0, le=1)


class AuthStageConfig(_Strict):
    enabled: bool = True
    # How long a verified key is trusted without asking the store again (revocation delay).
    cache_ttl_s: float = Field(default=5.0, ge=0)


class PolicyStageConfig(_Strict):
    """Per-team budgets, rate limits and model rules (docs/policies.md)."""

    enabled: bool = True
    # A YAML or JSON policy file, re-read when it changes; teams set through the admin API
    # (kept in the store, shared by every instance) override the file's.
    file: str | None = None
    reload_interval_s: float = Field(default=5.0, gt=0)
    # Where the end user's id comes from, for per-user budgets.
    user_header: str = "x-tollgate-user"
    # Threshold alerts are also POSTed here as JSON, when set.
    alert_webhook: str | None = None
    # A concurrency lease a crashed gateway never released expires after this long.
    lease_ttl_s: int = Field(default=900, gt=0)
    # Output tokens assumed when neither the request nor the price map gives a maximum.
    default_max_output_tokens: int = Field(default=4096, gt=0)


class ExactCacheStageConfig(_Strict):
    """Answers a repeated request from the store (docs/caching.md); a team's policy may
    override `enabled`, `ttl_s`, `max_bytes` and `cache_nondeterministic` under
    `stages.exact_cache`."""

    enabled: bool = True
    ttl_s: float = Field(default=3600.0, gt=0)
    # Per team: past it the oldest entries are evicted.
    max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    # Also cache requests that sample (no temperature 0, no seed): a repeat gets the first answer.
    cache_nondeterministic: bool = False


class ContextStageConfig(_Strict):
    """Tool selection, stale tool-result pruning and history summarisation (docs/context.md);
    a team's policy may switch each off or retune it under `stages.context`."""

    enabled: bool = True
    tool_selection: ToolSelectionConfig = Field(default_factory=ToolSelectionConfig)
    prune_tool_results: PruneToolResultsConfig = Field(default_factory=PruneToolResultsConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)


class SemanticCacheStageConfig(_Strict):
    """Answers a question asked before in other words (docs/caching.md); a team's policy may
    override `enabled`, `threshold`, `verify` and `cache_nondeterministic` under
    `stages.semantic_cache`."""

    enabled: bool = True
    # Embeddings: the int8 ONNX all-MiniLM-L6-v2 (fast), or a sentence-transformers model
    # directory; `model` points to another ONNX file or model directory.
    backend: Literal["onnx", "sentence-transformers"] = "onnx"
    model: str | None = None
    # Cosine similarity a cached question needs; unset: the benchmarked default.
    threshold: float | None = Field(default=None, gt=0, le=1)
    # Numbers, names, negation and polarity must agree before a similar question is served.
    verify: bool = True
    ttl_s: float = Field(default=3600.0, gt=0)
    # Per team, for the stored answers; past it the oldest are evicted.
    max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    cache_nondeterministic: bool = False
    # Longer questions are not compared: the embedding sees only their first 256 tokens.
    max_question_chars: int = Field(default=1000, gt=0)
    # How often an instance reads the entries other instances added.
    sync_interval_s: float = Field(default=0.5, gt=0)


class RouteStageConfig(_Strict):
    """Sends a request to a routed alias (`models.<alias>.route`) to one of its candidates
    (docs/routing.md); a team's policy may set `prefer` and `target` under `stages.route`."""

    enabled: bool = True


class DeferStageConfig(_Strict):
    """Deferred requests go to the providers' batch APIs at about half price (docs/batch.md);
    a team's policy may mark its traffic deferrable under `stages.defer`."""

    enabled: bool = True
    # How long a deferred request waits for others bound for the same model before its
    # group is sent as one provider batch, and the most one batch holds.
    window_s: float = Field(default=60.0, gt=0)
    max_requests: int = Field(default=10_000, gt=0, le=100_000)
    max_bytes: int = Field(default=100 * 1024 * 1024, gt=0, le=200 * 1024 * 1024)
    # The first status check of a provider batch after this long, then backing off to poll_max_s.
    poll_interval_s: float = Field(default=30.0, gt=0)
    poll_max_s: float = Field(default=600.0, gt=0)
    # A request whose deadline is this close and has no answer yet is sent online instead.
    online_margin_s: float = Field(default=900.0, ge=0)
    # `x-tollgate-defer: true` waits this long at most; no deadline may be further away than max_deadline_s.
    default_deadline_s: float = Field(default=86400.0, gt=0)
    max_deadline_s: float = Field(default=7 * 86400.0, gt=0)
    # How often each instance looks for work, and how long a dead instance's claim on a piece
    # of work lasts (a live one renews it).
    tick_s: float = Field(default=1.0, gt=0)
    lease_ttl_s: float = Field(default=10.0, gt=0)


class StagesConfig(_Strict):
    auth: AuthStageConfig = Field(default_factory=AuthStageConfig)
    policy: PolicyStageConfig = Field(default_factory=PolicyStageConfig)
    exact_cache: ExactCacheStageConfig = Field(default_factory=ExactCacheStageConfig)
    context: ContextStageConfig = Field(default_factory=ContextStageConfig)
    compress: CompressStageConfig = Field(default_factory=CompressStageConfig)
    semantic_cache: SemanticCacheStageConfig = Field(default_factory=SemanticCacheStageConfig)
    route: RouteStageConfig = Field(default_factory=RouteStageConfig)
    defer: DeferStageConfig = Field(default_factory=DeferStageConfig)


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    sim: SimConfig = Field(default_factory=SimConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    # Alias -> deployments. An alias ending in "/*" serves every model with that prefix.
    models: dict[str, ModelAlias] = Field(default_factory=dict)

    @field_validator("models")
    @classmethod
    def _wildcards(cls, models: dict[str, ModelAlias]) -> dict[str, ModelAlias]:
        for alias, entry in models.items():
            wildcard = alias.endswith("/*")
            for i, dep in enumerate(entry.deployments):
                if dep.model == "*" and not wildcard:
                    raise ValueError(f"{alias}.deployments[{i}].model: '*' is only allowed under an alias ending in '/*'")
        return models

    @model_validator(mode="after")
    def _fallbacks_exist(self) -> Config:
        for alias, entry in self.models.items():
            for i, fb in enumerate(entry.fallbacks):
                if fb not in self.models:
                    raise ValueError(f"models.{alias}.fallbacks[{i}]: unknown model alias {fb!r}")
        self._serve_routes_by_their_strongest()
        return self

    def _serve_routes_by_their_strongest(self) -> None:
        """A routed alias resolves like its strongest candidate (its deployments, then the
        other candidates as fallbacks), so pricing, budgets, caches and the dispatcher all see
        a real model even before, or without, the route stage."""
        for alias, entry in self.models.items():
            if entry.route is None:
                continue
            if alias.endswith("/*"):
                raise ValueError(f"models.{alias}.route: a wildcard alias cannot be routed")
            for i, name in enumerate(entry.route.candidates):
                candidate = self.models.get(name)
                if candidate is None:
                    raise ValueError(f"models.{alias}.route.candidates[{i}]: unknown model alias {name!r}")
                if candidate.route is not None or name == alias:
                    raise ValueError(f"models.{alias}.route.candidates[{i}]: {name!r} is routed itself")
            strongest = self.models[entry.route.candidates[0]]
            self.models[alias] = entry.model_copy(
                update={
                    "deployments": list(strongest.deployments),
                    "fallbacks": [*strongest.fallbacks, *entry.route.candidates[1:]],
                }
            )


def interpolate_env(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace `${NAME}` and `${NAME:-default}`; an unset variable with no default is an error."""
    env = os.environ if environ is None else environ
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    result = _ENV_REF.sub(substitute, text)
    if missing:
        raise ConfigError(f"environment variable(s) not set: {', '.join(sorted(set(missing)))}")
    return result


def format_validation_error(err: ValidationError) -> str:
    # The same dotted paths as policy files: a key with dots or slashes (`sim/*`) is quoted.
    return describe_validation_error(err)


def parse_config(data: Any) -> Config:
    try:
        return Config.model_validate(data if data is not None else {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_config(path: str | Path | None) -> Config:
    """Read the YAML file, or build the embedded defaults when `path` is None."""
    if path is None:
        return default_config()
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {file}: {err.strerror}") from None
    try:
        data = yaml.safe_load(interpolate_env(text))
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML: {err}") from None
    config = parse_config(data)
    if not config.server.master_key and os.environ.get("TOLLGATE_MASTER_KEY"):
        config = config.model_copy(
            update={"server": config.server.model_copy(update={"master_key": os.environ["TOLLGATE_MASTER_KEY"]})}
        )
    return config


# Environment keys that switch on a real provider when no config file is given.
_ENV_PROVIDERS: dict[str, tuple[str, str]] = {
    "OPENAI_API_KEY": ("openai", "openai"),
    "ANTHROPIC_API_KEY": ("anthropic", "anthropic"),
    "GEMINI_API_KEY": ("gemini", "gemini"),
    "GROQ_API_KEY": ("groq", "groq"),
    "MISTRAL_API_KEY": ("mistral", "mistral"),
    "COHERE_API_KEY": ("cohere", "cohere"),
    "DEEPSEEK_API_KEY": ("deepseek", "deepseek"),
    "TOGETHER_API_KEY": ("together", "together"),
}


def default_config(environ: dict[str, str] | None = None) -> Config:
    """No config file: the simulator's `sim/*` models plus every provider whose key is set.

    A real provider is served under its own prefix (`openai/gpt-4o-mini`,
    `anthropic/claude-3-5-haiku-latest`), so a name never silently changes provider.
    """
    env = os.environ if environ is None else environ
    models: dict[str, Any] = {"sim/*": {"deployments": [{"provider": "sim", "model": "*"}]}}
    for key_env, (prefix, provider) in _ENV_PROVIDERS.items():
        if env.get(key_env):
            models[f"{prefix}/*"] = {"deployments": [{"provider": provider, "model": "*", "api_key_env": key_env}]}
    data: dict[str, Any] = {"models": models}
    if env.get("TOLLGATE_MASTER_KEY"):
        data["server"] = {"master_key": env["TOLLGATE_MASTER_KEY"]}
    if env.get("TOLLGATE_DB"):
        data["store"] = {"backend": "sqlite", "path": env["TOLLGATE_DB"]}
    return parse_config(data)
