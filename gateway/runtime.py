"""Everything a running gateway owns, built in the lifespan and closed on shutdown.

No module-level state: the ASGI app holds one `Runtime`, and tests build as many as they like.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.accounting.costing import BaselinePrices
from gateway.accounting.ledger import Ledger, spool_dir_for
from gateway.accounting.prices import Price, PriceTable
from gateway.accounting.settle import Accountant
from gateway.batch.service import Deferred
from gateway.config import Config
from gateway.dispatch import Dispatcher, provider_kind
from gateway.errors import TollgateError
from gateway.keys import KeyRing
from gateway.pipeline import CallNext, Stage, build_chain
from gateway.providers.base import Provider
from gateway.providers.litellm_adapter import LitellmProvider
from gateway.stages.registry import StageDeps, build_stages
from gateway.store import open_store
from gateway.store.base import Store
from gateway.telemetry import Telemetry

log = logging.getLogger("tollgate")


@dataclass(slots=True)
class Runtime:
    config: Config
    store: Store
    keys: KeyRing
    providers: dict[str, Provider]
    dispatcher: Dispatcher
    stages: list[Stage]
    chain: CallNext
    prices: PriceTable
    ledger: Ledger
    telemetry: Telemetry
    accountant: Accountant
    # The batch path (deferred requests); None when the defer stage is off.
    deferred: Deferred | None = None
    closed: bool = field(default=False)

    @classmethod
    async def start(cls, config: Config, *, telemetry: Telemetry | None = None) -> Runtime:
        # Exporters first: a bad OTEL_* variable fails start-up before anything is opened.
        telemetry = telemetry or Telemetry.from_env(config.telemetry)
        store = await open_store(config.store)
        try:
            providers = _providers(config)
            keys = KeyRing(store)
            dispatcher = Dispatcher(config, providers)
            prices = PriceTable()
            deps = StageDeps(
                store=store, keys=keys, dispatcher=dispatcher, prices=prices, on_alert=telemetry.alert
            )
            stages = build_stages(config, deps)
            for stage in stages:
                start = getattr(stage, "start", None)
                if start is not None:
                    await start()
            deployments = [dep for entry in config.models.values() for dep in entry.deployments]
            prices.warm(dep.model for dep in deployments if dep.model != "*")
            if any(provider_kind(dep) == "litellm" for dep in deployments):
                await LitellmProvider.warm()
            ledger = Ledger(
                store, spool_dir=spool_dir_for(config), flush_interval_s=config.ledger.flush_interval_s
            )
            await ledger.start()
            accountant = Accountant(prices, BaselinePrices(prices, _primary(dispatcher)), ledger, telemetry)
            deferred = None
            if config.stages.defer.enabled:
                deferred = Deferred(config.stages.defer, store, dispatcher, accountant, prices)
                await deferred.start()
        except BaseException:
            await store.aclose()
            telemetry.shutdown()
            raise
        log.info(
            "gateway ready",
            extra={
                "store": config.store.backend,
                "models": list(config.models),
                "stages": [s.name for s in stages],
            },
        )
        runtime = cls(
            config=config,
            store=store,
            keys=keys,
            providers=providers,
            dispatcher=dispatcher,
            stages=stages,
            chain=build_chain(stages, dispatcher, around=telemetry.around if telemetry.tracing else None),
            prices=prices,
            ledger=ledger,
            telemetry=telemetry,
            accountant=accountant,
            deferred=deferred,
        )
        if deferred is not None:
            # Batch files' lines run through the whole chain, which exists only now.
            deferred.client_batches.bind(runtime.chain)
        return runtime

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.deferred is not None:
            await self.deferred.aclose()
        for stage in self.stages:
            close = getattr(stage, "aclose", None)
            if close is not None:
                await close()
        await self.ledger.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        await self.store.aclose()
        self.telemetry.shutdown()


def _primary(dispatcher: Dispatcher) -> Callable[[str], tuple[str, Price | None] | None]:
    """A requested name's primary deployment: the upstream model and its own price, if any."""

    def primary(model: str) -> tuple[str, Price | None] | None:
        try:
            upstream, deployment = dispatcher.candidates(model)[0]
        except TollgateError:
            return None
        own = deployment.effective_price()
        return upstream, None if own is None else Price.from_override(own)

    return primary


def _providers(config: Config) -> dict[str, Provider]:
    from gateway.providers.openai_compat import OpenAICompatProvider
    from gateway.sim.transport import SimProvider

    return {
        "openai_compat": OpenAICompatProvider(),
        "litellm": LitellmProvider(),
        "sim": SimProvider(config.sim),
    }
