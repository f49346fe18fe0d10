"""``gateway.http.openai.serving``: OpenAI request bodies to domain parameters, and outputs to OpenAI's shapes."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import BadRequest, InvalidRequest
from gateway.http.openai.protocol import ChatCompletionRequest, CompletionRequest
from gateway.http.openai.serving import (
    answer_text,
    chat_logprobs,
    chat_messages,
    completion_logprobs,
    finish_reason,
    params_for,
    response,
    usage,
    wants_logprobs,
)
from gateway.stats import RequestStats
from gateway.types import FinishReason, GenerationOutput, Token, TopToken
from tests.unit.fake_engine import fake_settings

SETTINGS = fake_settings(max_new_tokens_limit=64, default_max_new_tokens=16)


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def completion(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "m", "prompt": "hi", **fields})


def output(
    text: str, reason: FinishReason = FinishReason.LENGTH, tokens: list[Token] | None = None
) -> GenerationOutput:
    return GenerationOutput(text=text, finish_reason=reason, prompt_tokens=2, tokens=tokens or [])


# -- params_for --


def test_openais_defaults_sample_at_temperature_one_up_to_the_limit() -> None:
    params = params_for(chat(), SETTINGS)
    assert params.max_new_tokens == 64  # no max_tokens: the configured limit
    assert params.sampling.do_sample and params.sampling.temperature == 1.0 and params.sampling.top_p == 1.0
    assert params.stop == () and params.top_logprobs == 0


def test_temperature_zero_is_greedy_and_drops_the_sampling_knobs() -> None:
    params = params_for(completion(temperature=0, top_p=0.5, seed=7), SETTINGS)
    sampling = params.sampling
    assert not sampling.do_sample and sampling.temperature == 1.0 and sampling.top_p == 1.0 and sampling.seed is None


def test_sampling_fields_are_carried_over() -> None:
    request = chat(
        temperature=0.5,
        top_p=0.9,
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=-1,
        logit_bias={"20": 1.5, "3": -100},
        stop=["\n", "END"],
        max_completion_tokens=8,
        max_tokens=30,
    )
    params = params_for(request, SETTINGS)
    sampling = params.sampling
    assert sampling.do_sample and sampling.temperature == 0.5 and sampling.top_p == 0.9 and sampling.seed == 3
    assert sampling.presence_penalty == 0.5 and sampling.frequency_penalty == -1.0
    assert sampling.logit_bias == ((3, -100.0), (20, 1.5))  # by token id, as numbers
    assert params.stop == ("\n", "END") and params.max_new_tokens == 8  # max_completion_tokens wins
    assert params_for(completion(stop="###", max_tokens=5), SETTINGS).stop == ("###",)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (chat(max_tokens=65), "max_tokens"),
        (chat(max_completion_tokens=65), "max_completion_tokens"),
        (completion(max_tokens=1000), "max_tokens"),
    ],
)
def test_more_tokens_than_the_limit_is_refused_naming_the_field(
    request_: ChatCompletionRequest | CompletionRequest, field: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        params_for(request_, SETTINGS)
    assert caught.value.param == field and "<= 64" in caught.value.message


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"best_of": 2}, "best_of"),
    ],
)
def test_what_the_gateway_does_not_do_is_a_400_naming_it(fields: dict[str, Any], bad: str) -> None:
    with pytest.raises(BadRequest) as caught:
        params_for(chat(**fields), SETTINGS)
    assert caught.value.status_code == 400 and caught.value.param == bad


def test_neutral_values_of_unimplemented_fields_are_accepted() -> None:
    request = chat(tools=[], tool_choice="none", response_format={"type": "text"}, modalities=["text"], best_of=1)
    assert params_for(request, SETTINGS).max_new_tokens == 64


def test_logprobs() -> None:
    assert params_for(chat(logprobs=True, top_logprobs=3), SETTINGS).top_logprobs == 3
    assert params_for(completion(logprobs=2), SETTINGS).top_logprobs == 2
    with pytest.raises(InvalidRequest) as caught:
        params_for(chat(top_logprobs=3), SETTINGS)
    assert caught.value.param == "top_logprobs"
    assert wants_logprobs(chat(logprobs=True)) and not wants_logprobs(chat())
    assert wants_logprobs(completion(logprobs=0)) and not wants_logprobs(completion())


def test_chat_messages_for_the_template() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": None},
            ],
        }
    )
    assert chat_messages(request) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ab"},
        {"role": "assistant", "content": ""},
    ]


# -- answers --


def test_answer_text_cuts_the_stop_sequence_that_ended_it() -> None:
    assert answer_text(output("one END two", FinishReason.STOP), ("END",)) == "one "
    assert answer_text(output("a#b!c", FinishReason.STOP), ("!", "#")) == "a"  # the earliest stop
    assert answer_text(output("one END", FinishReason.LENGTH), ("END",)) == "one END"  # not ended by a stop
    assert answer_text(output("plain", FinishReason.STOP), ("END",)) == "plain"


def test_finish_reasons() -> None:
    assert [finish_reason(output("", r)) for r in FinishReason] == ["length", "stop", "stop"]


def test_usage_counts_each_prompt_once() -> None:
    stats = RequestStats(model="m", prompt_tokens=12, generated_tokens=9)
    assert usage(stats, 1) == {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
    assert usage(stats, 3) == {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}  # n=3 copies


def test_logprobs_shapes() -> None:
    tokens = [
        Token(1, "hé", -0.5, False, top=(TopToken(1, "hé", -0.5), TopToken(2, "x", -2.0))),
        Token(2, "y", None, False),
    ]
    content = chat_logprobs(tokens)["content"]
    assert content[0] == {
        "token": "hé",
        "logprob": -0.5,
        "bytes": [104, 195, 169],
        "top_logprobs": [
            {"token": "hé", "logprob": -0.5, "bytes": [104, 195, 169]},
            {"token": "x", "logprob": -2.0, "bytes": [120]},
        ],
    }
    assert content[1]["logprob"] == -9999.0  # unknown: OpenAI's "very unlikely"
    legacy = completion_logprobs(tokens, offset=10)
    assert legacy == {
        "tokens": ["hé", "y"],
        "token_logprobs": [-0.5, None],
        "top_logprobs": [{"hé": -0.5, "x": -2.0}, {}],
        "text_offset": [10, 12],
    }


def test_whole_answers() -> None:
    outputs = [output("a END", FinishReason.STOP, [Token(1, "a", -0.1, False)]), output("b", FinishReason.LENGTH)]
    stats = RequestStats(model="m", prompt_tokens=4, generated_tokens=3)
    answer = response(True, "rid", "m", outputs, stats, logprobs=False, copies=2, stops=("END",))
    assert answer["id"] == "chatcmpl-rid" and answer["object"] == "chat.completion" and answer["model"] == "m"
    assert [c["message"] for c in answer["choices"]] == [
        {"role": "assistant", "content": "a "},
        {"role": "assistant", "content": "b"},
    ]
    assert [c["finish_reason"] for c in answer["choices"]] == ["stop", "length"]
    assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    text = response(False, "rid", "m", outputs, stats, logprobs=True, copies=1, stops=("END",))
    assert text["id"] == "cmpl-rid" and [c["text"] for c in text["choices"]] == ["a ", "b"]
    assert text["choices"][0]["logprobs"]["tokens"] == ["a"] and text["usage"]["prompt_tokens"] == 4
