"""TransformersChatModel on the tiny model: seeding, batching, greedy, complete(), choice_logprobs()."""
from __future__ import annotations

import math

import pytest
import torch

from cai_core.llm.base import Sampling
from cai_core.llm.transformers_backend import TransformersChatModel
from cai_core.models import tiny


@pytest.fixture(scope="module")
def llm(cache):
    model = TransformersChatModel("tiny", batch_size=3)
    model.chat([[{"role": "user", "content": "hi"}]], [Sampling(temperature=0, max_new_tokens=1)])  # load now
    return model


PROMPTS = ["What is the capital of France?", "How do I stay safe online?", "Tell me a fun fact.",
           "Why is the sky blue?", "Write a haiku about rain.", "How can I learn to cook?", "Hello"]


def conv(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_lazy_load():
    model = TransformersChatModel("./does/not/matter")
    assert model._model is None and model.name == "./does/not/matter"


def test_greedy_is_deterministic_and_batch_independent(llm):
    greedy = Sampling(temperature=0, max_new_tokens=24)
    together = llm.chat([conv(p) for p in PROMPTS], [greedy] * len(PROMPTS))
    alone = [llm.chat([conv(p)], [greedy])[0] for p in PROMPTS]
    assert together == alone
    assert any(together)
    reordered = llm.chat([conv(p) for p in reversed(PROMPTS)], [greedy] * len(PROMPTS))
    assert reordered == list(reversed(together))


def test_seeded_sampling_is_reproducible_and_independent_of_batch(llm):
    samplings = [Sampling(temperature=1.0, top_p=0.95, max_new_tokens=20, seed=100 + i) for i in range(len(PROMPTS))]
    first = llm.chat([conv(p) for p in PROMPTS], samplings)
    again = llm.chat([conv(p) for p in PROMPTS], samplings)
    assert first == again
    # the same (prompt, seed) alone, or among other requests in another order, gives the same text
    assert llm.chat([conv(PROMPTS[3])], [samplings[3]]) == [first[3]]
    mixed = llm.chat([conv(PROMPTS[5]), conv("Something else entirely"), conv(PROMPTS[1])],
                     [samplings[5], Sampling(temperature=0, max_new_tokens=5), samplings[1]])
    assert mixed[0] == first[5] and mixed[2] == first[1]
    # different seeds give different samples (overwhelmingly likely at temperature 1)
    other = llm.chat([conv(PROMPTS[0])] * 4, [Sampling(temperature=1.0, max_new_tokens=20, seed=s) for s in range(4)])
    assert len(set(other)) > 1


def test_seeded_sampling_leaves_global_rng_alone(llm):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    llm.chat([conv("Hi")], [Sampling(temperature=1.0, max_new_tokens=5, seed=1)])
    assert torch.equal(torch.rand(3), expected)


def test_unseeded_sampling_runs(llm):
    out = llm.chat([conv(p) for p in PROMPTS[:4]], [Sampling(temperature=0.8, max_new_tokens=10)] * 4)
    assert len(out) == 4 and all(isinstance(t, str) for t in out)


def test_max_new_tokens_and_special_tokens(llm):
    tok = llm.tokenizer
    for n in (1, 3, 8):
        text = llm.chat([conv("Tell me a fun fact.")], [Sampling(temperature=0, max_new_tokens=n)])[0]
        assert len(tok(text, add_special_tokens=False)["input_ids"]) <= n + 1  # re-tokenising may merge/split 1
    long = llm.chat([conv("Tell me a fun fact.")], [Sampling(temperature=0, max_new_tokens=200)])[0]
    for special in tiny.SPECIAL_TOKENS:
        assert special not in long
    # a short request batched with a long one is cut to its own length
    short, longer = llm.chat([conv("Tell me a fun fact.")] * 2,
                             [Sampling(temperature=0, max_new_tokens=4), Sampling(temperature=0, max_new_tokens=30)])
    assert longer.startswith(short)
    assert llm.chat([conv("x")], [Sampling(temperature=0, max_new_tokens=0)]) == [""]


def test_greedy_stops_at_eos(llm):
    model, tok = llm.model, llm.tokenizer
    ids = tok.apply_chat_template(conv("What is two plus two?"), add_generation_prompt=True, return_dict=True,
                                  return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=200, do_sample=False)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    expected = tok.decode(new, skip_special_tokens=True)
    assert llm.chat([conv("What is two plus two?")], [Sampling(temperature=0, max_new_tokens=200)]) == [expected]
    assert len(new) < 200 and new[-1] in llm._stop_ids  # it did stop at an end token


def test_long_prompts_keep_their_end(llm):
    before = llm.stats["prompts_truncated"]
    long = conv("word " * 1500 + "What is the capital of France?")
    out = llm.chat([long], [Sampling(temperature=0, max_new_tokens=8)])
    assert isinstance(out[0], str)
    assert llm.choice_logprobs([long], ["Paris"])[0][0] < 0
    assert llm.stats["prompts_truncated"] >= before + 2


def test_complete(llm):
    greedy = Sampling(temperature=0, max_new_tokens=12)
    a = llm.complete(["The sea was", "Water is made of"], [greedy, greedy])
    b = llm.complete(["Water is made of"], [greedy])
    assert a[1] == b[0] and all(isinstance(t, str) and t for t in a)
    seeded = Sampling(temperature=1.0, max_new_tokens=12, seed=3)
    assert llm.complete(["The sea was"], [seeded]) == llm.complete(["The sea was"], [seeded])


def test_request_validation(llm):
    with pytest.raises(ValueError, match="sampling"):
        llm.chat([conv("a"), conv("b")], [Sampling()])
    with pytest.raises(ValueError, match="invalid sampling"):
        llm.chat([conv("a")], [Sampling(temperature=-1)])


def _manual_logprob(llm, messages, choice: str) -> float:
    tok, model = llm.tokenizer, llm.model
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    ids = tok(choice, add_special_tokens=False)["input_ids"]
    total = 0.0
    for k, target in enumerate(ids):  # one forward per token: the chain rule, spelled out
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + ids[:k]])).logits[0, -1]
        total += float(torch.log_softmax(logits.float(), -1)[target])
    return total


def test_choice_logprobs_match_manual_chain_rule(llm):
    convs = [conv("Is the sky blue? Answer yes or no."), conv("Which is better, A or B?")]
    choices = ["Yes", "No", "The capital of France is Paris.", "Paris, I think."]  # two longer: the cache is cut back
    got = llm.choice_logprobs(convs, choices)
    assert len(got) == 2 and all(len(row) == 4 for row in got)
    for c, row in zip(convs, got):
        for choice, value in zip(choices, row):
            assert value < 0 and math.isfinite(value)
            assert value == pytest.approx(_manual_logprob(llm, c, choice), abs=1e-3)


def test_choice_logprobs_batch_independent_and_normalised(llm):
    convs = [conv(p) for p in PROMPTS]  # 7 conversations, batch_size 3: three forward passes
    choices = [" A", " B"]
    together = llm.choice_logprobs(convs, choices)
    alone = [llm.choice_logprobs([c], choices)[0] for c in convs]
    for row_a, row_b in zip(together, alone):
        assert row_a == pytest.approx(row_b, abs=1e-4)
    # single-token choices covering (almost) the whole vocabulary: probabilities sum to at most 1
    tok = llm.tokenizer
    singles = []
    for token_id in range(len(tok)):
        text = tok.decode([token_id])
        if token_id not in tok.all_special_ids and tok(text, add_special_tokens=False)["input_ids"] == [token_id]:
            singles.append(text)
    probs = [math.exp(v) for v in llm.choice_logprobs([conv("Tell me a fun fact.")], singles)[0]]
    assert 0.5 < sum(probs) <= 1.0 + 1e-4
    with pytest.raises(ValueError):
        llm.choice_logprobs(convs, [])
