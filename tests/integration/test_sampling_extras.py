"""OpenAI's sampling extras on the real demo models: logit bias, presence and frequency penalties, top log-probs.

Both decode paths: the causal demo model decodes in the continuous batch, the seq2seq demo model in one
``generate`` call per submission. TGI's ``top_n_tokens`` and ``frequency_penalty`` go through real HTTP; the values
only the OpenAI adapter carries (``logit_bias``, ``presence_penalty``) go through the gateway's facade, the seam
that adapter calls.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID
from gateway.types import GenerationOutput, GenerationParams, SamplingParams, Token
from tests.serving_helpers import gen, metrics, sample, sse_events

AppClient = Callable[..., Any]
MODELS = [DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID]
# Greedy output of the causal demo model on this prompt loops over two or three characters.
LOOPING = "aaaa"


async def generate(app: Any, prompt: str, model: str = DEMO_CAUSAL_ID, **params: Any) -> GenerationOutput:
    """One greedy row through the facade (``sampling`` keys go into ``SamplingParams``)."""
    sampling = SamplingParams(**params.pop("sampling", {}))
    result = await app.gateway.generate([prompt], GenerationParams(sampling=sampling, **params), 30.0, model)
    output: GenerationOutput = result.outputs[0]
    return output


def token_id(app: Any, model: str, char: str) -> int:
    ids: list[int] = app.gateway.engine.services[model].runner.encode(char)
    return ids[-1]


def distinct(tokens: list[Token]) -> int:
    return len({t.id for t in tokens})


def assert_top_of_greedy(tokens: list[Token], n: int) -> None:
    """Each token's ``n`` alternatives: most likely first, the greedy choice first with its own log-probability."""
    assert tokens
    for token in tokens:
        assert len(token.top) == n
        logprobs = [t.logprob for t in token.top]
        assert logprobs == sorted(logprobs, reverse=True)
        assert len({t.id for t in token.top}) == n
        assert token.top[0].id == token.id
        assert token.logprob is not None and math.isclose(token.top[0].logprob, token.logprob, abs_tol=1e-5)
        assert all(t.logprob <= 0.0 for t in token.top)


# -- logit bias --


@pytest.mark.parametrize("model", MODELS)
async def test_a_strong_logit_bias_makes_greedy_rows_choose_that_token(app_client: AppClient, model: str) -> None:
    async with app_client() as (_, app):
        z = token_id(app, model, "Z")
        plain = await generate(app, "hello", model, max_new_tokens=8)
        assert any(t.id != z for t in plain.tokens)
        biased = await generate(app, "hello", model, max_new_tokens=8, sampling={"logit_bias": ((z, 100.0),)})
        assert [t.id for t in biased.tokens] == [z] * 8
        assert biased.text == "Z" * 8


@pytest.mark.parametrize("model", MODELS)
async def test_a_negative_bias_on_the_greedy_token_makes_the_runner_up_chosen(
    app_client: AppClient, model: str
) -> None:
    async with app_client() as (_, app):
        plain = await generate(app, "hello", model, max_new_tokens=1, top_logprobs=2)
        best, runner_up = plain.tokens[0].top
        banned = await generate(app, "hello", model, max_new_tokens=1, sampling={"logit_bias": ((best.id, -100.0),)})
        assert banned.tokens[0].id == runner_up.id != best.id


# -- presence and frequency penalties --


@pytest.mark.parametrize("model", MODELS)
async def test_penalties_change_greedy_output_from_its_first_repeat(app_client: AppClient, model: str) -> None:
    # A penalty lowers only tokens already generated: greedy output is unchanged up to the step where it would
    # repeat one, and changes there.
    async with app_client() as (_, app):
        plain = await generate(app, LOOPING, model, max_new_tokens=30)
        ids = [t.id for t in plain.tokens]
        first_repeat = next(i for i, token_id in enumerate(ids) if token_id in ids[:i])
        for sampling in ({"presence_penalty": 2.0}, {"frequency_penalty": 1.0}):
            penalized = [
                t.id for t in (await generate(app, LOOPING, model, max_new_tokens=30, sampling=sampling)).tokens
            ]
            assert penalized[:first_repeat] == ids[:first_repeat], sampling
            assert penalized[first_repeat] != ids[first_repeat], sampling
            assert len(set(penalized)) / len(penalized) > len(set(ids)) / len(ids), sampling  # fewer repeats


async def test_penalties_break_a_greedy_loop(app_client: AppClient) -> None:
    async with app_client() as (_, app):
        plain = await generate(app, LOOPING, max_new_tokens=30)
        assert distinct(plain.tokens) <= 5  # the loop this test is about
        for sampling in ({"presence_penalty": 2.0}, {"frequency_penalty": 1.0}):
            penalized = await generate(app, LOOPING, max_new_tokens=30, sampling=sampling)
            assert distinct(penalized.tokens) > 2 * distinct(plain.tokens), sampling


async def test_the_prompt_does_not_count_for_the_penalties(app_client: AppClient) -> None:
    async with app_client() as (_, app):
        looped = await generate(app, LOOPING, max_new_tokens=12)
        prompt = LOOPING + looped.text  # the loop is in the prompt now
        plain = await generate(app, prompt, max_new_tokens=2)
        assert plain.tokens[0].text in prompt
        penalized = await generate(app, prompt, max_new_tokens=2, sampling={"frequency_penalty": 2.0})
        assert penalized.tokens[0].id == plain.tokens[0].id


async def test_a_negative_frequency_penalty_makes_the_loop_tighter(app_client: AppClient) -> None:
    async with app_client() as (_, app):
        plain = await generate(app, "hello", max_new_tokens=30)
        rewarded = await generate(app, "hello", max_new_tokens=30, sampling={"frequency_penalty": -2.0})
        assert distinct(rewarded.tokens) < distinct(plain.tokens)


async def test_tgi_frequency_penalty(app_client: AppClient) -> None:
    async with app_client() as (client, app):
        r = await gen(client, LOOPING, max_new_tokens=30, frequency_penalty=1.0)
        assert r.status_code == 200, r.text
        facade = await generate(app, LOOPING, max_new_tokens=30, sampling={"frequency_penalty": 1.0})
        assert r.json()["generated_text"] == facade.text
        plain = (await gen(client, LOOPING, max_new_tokens=30)).json()["generated_text"]
        assert len(set(facade.text)) > len(set(plain))
        for bad in (2.5, -3.0, "x"):
            r = await gen(client, "hello", frequency_penalty=bad)
            assert r.status_code == 422 and "frequency_penalty" in r.json()["error"], r.text


# -- top log-probabilities --


@pytest.mark.parametrize("model", MODELS)
async def test_top_logprobs_on_both_decode_paths(app_client: AppClient, model: str) -> None:
    async with app_client() as (_, app):
        output = await generate(app, "hello", model, max_new_tokens=6, top_logprobs=4)
        assert_top_of_greedy(output.tokens, 4)
        plain = await generate(app, "hello", model, max_new_tokens=6)
        assert [t.id for t in plain.tokens] == [t.id for t in output.tokens]
        assert all(t.top == () for t in plain.tokens)


@pytest.mark.parametrize("model", MODELS)
async def test_top_logprobs_follow_the_biased_distribution(app_client: AppClient, model: str) -> None:
    # The alternatives come from the distribution the token is chosen from: after the bias, as the token's own.
    async with app_client() as (_, app):
        z = token_id(app, model, "Z")
        output = await generate(
            app, "hi", model, max_new_tokens=3, top_logprobs=3, sampling={"logit_bias": ((z, 100.0),)}
        )
        assert_top_of_greedy(output.tokens, 3)
        assert all(t.id == z and t.top[0].logprob > -1e-3 for t in output.tokens)


async def test_top_logprobs_of_sampled_rows(app_client: AppClient) -> None:
    async with app_client() as (_, app):
        sampling = {"do_sample": True, "seed": 11, "temperature": 0.7}
        output = await generate(app, "hello", max_new_tokens=12, top_logprobs=5, sampling=sampling)
        for token in output.tokens:
            assert len(token.top) == 5 and token.logprob is not None
            assert [t.logprob for t in token.top] == sorted((t.logprob for t in token.top), reverse=True)
            assert token.logprob <= token.top[0].logprob + 1e-5
            chosen = [t for t in token.top if t.id == token.id]
            if chosen:
                assert math.isclose(chosen[0].logprob, token.logprob, abs_tol=1e-5)


async def test_rows_with_different_extras_in_one_request(app_client: AppClient) -> None:
    # Rows of one request share a submission; each has its own top_logprobs and its own penalty history.
    async with app_client() as (_, app):
        params = GenerationParams(max_new_tokens=10, sampling=SamplingParams(frequency_penalty=0.5))
        alone = [await generate(app, p, max_new_tokens=10, sampling={"frequency_penalty": 0.5}) for p in ("ab", "xyz")]
        together = await app.gateway.generate(["ab", "xyz"], params, 30.0)
        assert [o.text for o in together.outputs] == [o.text for o in alone]
        wide = await app.gateway.generate(["ab"], replace(params, top_logprobs=2), 30.0)
        assert_top_of_greedy(wide.outputs[0].tokens, 2)


# -- TGI's top_n_tokens --


async def test_tgi_top_n_tokens_in_details(app_client: AppClient) -> None:
    async with app_client() as (client, _):
        r = await gen(client, "hello", max_new_tokens=5, details=True, top_n_tokens=3)
        assert r.status_code == 200, r.text
        details = r.json()["details"]
        assert len(details["top_tokens"]) == len(details["tokens"]) == 5
        for token, top in zip(details["tokens"], details["top_tokens"], strict=True):
            assert [set(t) for t in top] == [{"id", "text", "logprob", "special"}] * 3
            assert top[0]["id"] == token["id"] and top[0]["text"] == token["text"]
            assert math.isclose(top[0]["logprob"], token["logprob"], abs_tol=1e-5)
            assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        plain = (await gen(client, "hello", max_new_tokens=5, details=True, top_n_tokens=0)).json()["details"]
        assert plain["top_tokens"] is None
        assert [t["id"] for t in plain["tokens"]] == [t["id"] for t in details["tokens"]]


async def test_tgi_top_n_tokens_in_the_stream(app_client: AppClient) -> None:
    async with app_client() as (client, _):
        body = {"inputs": "hello", "parameters": {"max_new_tokens": 4, "top_n_tokens": 2, "details": True}}
        whole = (await client.post("/generate", json=body)).json()["details"]
        r = await client.post("/generate_stream", json=body)
        assert r.status_code == 200, r.text
        events = sse_events(r.text)
        assert len(events) == 4 and events[-1]["generated_text"] is not None
        assert [e["top_tokens"] for e in events] == whole["top_tokens"]
        assert [e["token"]["id"] for e in events] == [top[0]["id"] for top in whole["top_tokens"]]


async def test_tgi_top_n_tokens_limits(app_client: AppClient) -> None:
    async with app_client() as (client, _):
        for bad in (6, -1, 1.5):
            r = await gen(client, "hello", top_n_tokens=bad)
            assert r.status_code == 422, r.text
            assert "top_n_tokens" in r.json()["error"]
        assert (await gen(client, "hello", top_n_tokens=5, details=True)).status_code == 200


# -- bad values and the model process --


async def test_bad_extras_never_fail_the_batch_or_move_the_breaker(app_client: AppClient) -> None:
    async with app_client() as (client, app):
        plain = await generate(app, "hello", max_new_tokens=6)
        outside = ((-1, 100.0), (10**8, 100.0), (2**62, -100.0))
        z = token_id(app, DEMO_CAUSAL_ID, "Z")
        cases: list[tuple[dict[str, Any], str]] = [
            ({"logit_bias": outside}, plain.text),  # ids outside the vocabulary are ignored
            ({"logit_bias": ((z, math.nan),)}, plain.text),  # NaN counts as unset
            ({"presence_penalty": math.nan, "frequency_penalty": math.nan}, plain.text),
            ({"logit_bias": ((z, math.inf),)}, "Z" * 6),  # clamped to a finite bias
        ]
        for sampling, expected in cases:
            for model in MODELS:
                output = await generate(app, "hello", model, max_new_tokens=6, sampling=sampling)
                if model == DEMO_CAUSAL_ID:
                    assert output.text == expected, sampling
        # Huge penalties are clamped too: the rows are answered.
        output = await generate(app, "hello", max_new_tokens=6, sampling={"frequency_penalty": 1e30})
        assert output.generated_tokens == 6
        m = await metrics(client)
        for model in MODELS:
            assert sample(m, "gateway_circuit_breaker_state", model=model) == 0  # closed
        ready = (await client.get("/ready")).json()["components"]
        assert all(ready[model]["circuit_breaker"] == "closed" for model in MODELS)


async def test_extras_through_the_model_process(app_client: AppClient) -> None:
    body = {"inputs": "hello", "parameters": {"max_new_tokens": 6, "details": True, "top_n_tokens": 3}}
    penalized = {"inputs": LOOPING, "parameters": {"max_new_tokens": 20, "frequency_penalty": 1.0}}
    answers: list[tuple[Any, ...]] = []
    for model_process in (False, True):
        async with app_client(model_process=model_process) as (client, app):
            z = token_id(app, DEMO_SEQ2SEQ_ID, "Z")
            r1, r2 = await asyncio.gather(client.post("/generate", json=body), client.post("/generate", json=penalized))
            assert r1.status_code == r2.status_code == 200
            biased = await generate(
                app, "hi", DEMO_SEQ2SEQ_ID, max_new_tokens=3, sampling={"logit_bias": ((z, 100.0),)}
            )
            top = await generate(app, "hi", DEMO_SEQ2SEQ_ID, max_new_tokens=3, top_logprobs=2)
            assert_top_of_greedy(top.tokens, 2)
            answers.append((r1.json(), r2.json(), biased.text, [t.top for t in top.tokens]))
    in_process, across = answers
    assert across[2] == "ZZZ"
    assert across[0]["details"]["top_tokens"] is not None
    # Same model, same greedy choices: the values crossed the channel intact (log-probabilities to float precision).
    assert across[0]["generated_text"] == in_process[0]["generated_text"] and across[1:3] == in_process[1:3]
    for a, b in zip(across[0]["details"]["top_tokens"], in_process[0]["details"]["top_tokens"], strict=True):
        assert [(t["id"], t["text"], t["special"]) for t in a] == [(t["id"], t["text"], t["special"]) for t in b]
        assert all(math.isclose(x["logprob"], y["logprob"], abs_tol=1e-4) for x, y in zip(a, b, strict=True))
    assert [[t.id for t in top] for top in across[3]] == [[t.id for t in top] for top in in_process[3]]
