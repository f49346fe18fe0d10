"""The synthetic canary, served by the facade: every ``GATEWAY_CANARY_INTERVAL_S`` seconds each canary case goes
through ``Gateway.generate`` or ``Gateway.translate`` (admission, breaker, queue, batch, runner: the full path),
and its answer is checked (``gateway.quality.canary_runner``).

Canary requests are not HTTP requests: they leave no access-log line and no ``gateway_requests_*`` sample, and
their answers are not scored into the models' rolling quality score; they are counted in the canary's own
series (``gateway_canary_*``) through ``StatsSink.canary_finished``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.gateway import Gateway, ModelRole
from gateway.quality import LanguageIdentifier, configured_canaries
from gateway.quality.canary import CanaryCase
from gateway.quality.canary_runner import CanaryAnswer, CanaryRunner, CanarySink
from gateway.types import GenerationParams

__all__ = ["FacadeSender", "build_canary", "run_when_loaded"]

log = logging.getLogger("gateway.canary")


class FacadeSender:
    """``send`` for ``CanaryRunner``: one canary case through the facade, greedy, quality not assessed."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, case: CanaryCase) -> CanaryAnswer:
        gateway = self.gateway
        params = GenerationParams(max_new_tokens=case.max_new_tokens)
        timeout_s = gateway.settings.request_timeout_s
        if case.kind == "translate":
            assert case.source_lang is not None and case.target_lang is not None  # checked when the file is read
            work = gateway.translate([case.text], case.source_lang, case.target_lang, params, timeout_s, evaluate=False)
            translation = await work
            return CanaryAnswer(translation.outputs[0].text, translation.stats.model)
        model = case.model if case.model in gateway.served_models() else None
        result = await gateway.generate([case.text], params, timeout_s, model, evaluate=False)
        return CanaryAnswer(result.outputs[0].text, result.stats.model)

    def model_of(self, case: CanaryCase) -> str:
        """The model a case is meant for (its result's ``model`` label when no answer says so)."""
        if case.model in self.gateway.served_models():
            return case.model or ""
        role = ModelRole.TRANSLATION if case.kind == "translate" else ModelRole.GENERATION
        return self.gateway.model_id(role)


def build_canary(gateway: Gateway, sink: CanarySink) -> CanaryRunner | None:
    """The canary the settings ask for, or None (``GATEWAY_CANARY_INTERVAL_S`` 0, or no cases to run)."""
    settings = gateway.settings
    if settings.canary_interval_s <= 0:
        return None
    cases = configured_canaries(settings.canary_file, uses_demo_models=settings.uses_demo_models)
    if not cases:
        return None
    sender = FacadeSender(gateway)
    identifier = gateway.quality.evaluator.identifier if gateway.quality is not None else None
    return CanaryRunner(
        cases,
        sender,
        sink,
        interval_s=settings.canary_interval_s,
        timeout_s=settings.request_timeout_s,
        identifier=identifier or LanguageIdentifier(),
        default_model=sender.model_of,
    )


async def run_when_loaded(loading: asyncio.Task[None], canary: CanaryRunner) -> None:
    """Run the canary once the models have loaded (not at all if loading failed); until cancelled."""
    with contextlib.suppress(Exception):
        await asyncio.shield(loading)
    if loading.cancelled() or loading.exception() is not None:
        log.warning("canary not started: the models did not load")
        return
    await canary.run()
