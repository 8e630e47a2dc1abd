"""Everything a running gateway owns, built in the lifespan and closed on shutdown.

No module-level state: the ASGI app holds one `Runtime`, and tests build as many as they like.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from gateway.accounting.ledger import Ledger
from gateway.accounting.prices import PriceTable
from gateway.config import Config
from gateway.dispatch import Dispatcher, provider_kind
from gateway.keys import KeyRing
from gateway.pipeline import CallNext, Stage, build_chain
from gateway.providers.base import Provider
from gateway.providers.litellm_adapter import LitellmProvider
from gateway.stages.registry import StageDeps, build_stages
from gateway.store import open_store
from gateway.store.base import Store

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
    closed: bool = field(default=False)

    @classmethod
    async def start(cls, config: Config) -> Runtime:
        store = await open_store(config.store)
        try:
            providers = _providers(config)
            keys = KeyRing(store)
            dispatcher = Dispatcher(config, providers)
            stages = build_stages(config, StageDeps(store=store, keys=keys))
            prices = PriceTable()
            deployments = [dep for entry in config.models.values() for dep in entry.deployments]
            prices.warm(dep.model for dep in deployments if dep.model != "*")
            if any(provider_kind(dep) == "litellm" for dep in deployments):
                await LitellmProvider.warm()
            ledger = Ledger(store)
            ledger.start()
        except BaseException:
            await store.aclose()
            raise
        log.info(
            "gateway ready",
            extra={"store": config.store.backend, "models": list(config.models), "stages": [s.name for s in stages]},
        )
        return cls(
            config=config,
            store=store,
            keys=keys,
            providers=providers,
            dispatcher=dispatcher,
            stages=stages,
            chain=build_chain(stages, dispatcher),
            prices=prices,
            ledger=ledger,
        )

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.ledger.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        await self.store.aclose()


def _providers(config: Config) -> dict[str, Provider]:
    from gateway.providers.openai_compat import OpenAICompatProvider
    from gateway.sim.transport import SimProvider

    return {"openai_compat": OpenAICompatProvider(), "litellm": LitellmProvider(), "sim": SimProvider(config.sim)}
