"""Generation: the reference's defaults, minimum length, sampling, streaming, the memory check."""

import pytest
import torch

from longllava.cli import main
from longllava.core import generation, protocol
from longllava.core.configuration import released_config
from longllava.core.generation import GenerationSettings, generate, iter_tokens, prompt_memory_bytes
from longllava.core.pipeline import LongLlava
from longllava.errors import InputError


@pytest.fixture(scope="module")
def prompt(tiny):
    model, tokenizer = tiny
    torch.manual_seed(3)
    ids = torch.tensor([[1] + torch.randint(5, 1000, (12,)).tolist() + [model.config.image_token_id] * 144 + [7, 8]])
    return ids, torch.randn(1, 3, 336, 336)


def test_defaults_are_the_reference_chatbots():
    settings = GenerationSettings()
    # FreedomIntelligence/LongLLaVA llava/eval/chatbot.py: do_sample=False, max_new_tokens=768, min_new_tokens=1
    assert (settings.max_new_tokens, settings.min_new_tokens, settings.do_sample) == (768, 1, False)


def test_min_new_tokens_forbids_an_immediate_end(tiny, prompt):
    model, _ = tiny
    ids, pixels = prompt
    first = generate(model, ids, pixels, settings=GenerationSettings(max_new_tokens=1, min_new_tokens=0))[0, 0]
    # Make the greedy first token the end of text: without a minimum, generation stops right there.
    stop_at_once = generate(model, ids, pixels, settings=GenerationSettings(max_new_tokens=5, min_new_tokens=0),
                            eos_token_id=int(first))
    assert stop_at_once.tolist() == [[int(first)]]
    at_least_three = generate(model, ids, pixels, settings=GenerationSettings(max_new_tokens=5, min_new_tokens=3),
                              eos_token_id=int(first))
    assert at_least_three.shape[1] >= 3 and int(first) not in at_least_three[0, :3].tolist()


def test_greedy_generate_is_generate_without_a_minimum(tiny, prompt):
    model, _ = tiny
    ids, pixels = prompt
    settings = GenerationSettings(max_new_tokens=6, min_new_tokens=0)
    assert torch.equal(model.greedy_generate(ids, pixels, max_new_tokens=6), generate(model, ids, pixels, settings=settings))


def test_sampling_is_seeded_and_its_limits_are_greedy(tiny, prompt):
    model, _ = tiny
    ids, pixels = prompt
    greedy = generate(model, ids, pixels, settings=GenerationSettings(max_new_tokens=8))

    def sample(**kwargs):
        return generate(model, ids, pixels, settings=GenerationSettings(max_new_tokens=8, do_sample=True, **kwargs))

    assert torch.equal(sample(seed=1, temperature=2.0), sample(seed=1, temperature=2.0))
    assert not torch.equal(sample(seed=1, temperature=2.0), sample(seed=2, temperature=2.0))
    assert not torch.equal(sample(seed=1, temperature=2.0), greedy)
    assert torch.equal(sample(seed=4, top_p=1e-6), greedy)  # the nucleus holds the top token only
    assert torch.equal(sample(seed=4, temperature=1e-4), greedy)


def test_streamed_tokens_are_the_answer(tiny, prompt):
    model, tokenizer = tiny
    ids, pixels = prompt
    settings = GenerationSettings(max_new_tokens=7)
    seen = []
    tokens = generate(model, ids, pixels, settings=settings, on_token=seen.append)
    assert torch.equal(torch.stack(seen, dim=1), tokens)
    assert torch.equal(torch.stack(list(iter_tokens(model, ids, pixels, settings=settings)), dim=1), tokens)

    llava = LongLlava(model, tokenizer)
    image = protocol.ImageInput(torch.rand(64, 80, 3).mul(255).byte().numpy())
    pieces = []
    answer = llava.ask([image], "Is there a lesion?", settings=GenerationSettings(max_new_tokens=12), on_text=pieces.append)
    assert pieces and "".join(pieces).strip() == answer.text
    assert llava.ask([image], "Is there a lesion?", max_new_tokens=12).text == answer.text
    with pytest.raises(InputError, match="one prompt at a time"):
        llava.answer_prompts(["a", "b"], [[], []], on_text=print)


@pytest.mark.parametrize("kwargs,message", [
    ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
    ({"max_new_tokens": 4, "min_new_tokens": 5}, "min_new_tokens must lie in 0..max_new_tokens=4"),
    ({"temperature": 0.0}, "temperature must be positive"),
    ({"top_p": 0.0}, r"top_p must lie in \(0, 1\]"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        GenerationSettings(**kwargs)


def test_memory_estimate_of_1000_images_on_the_released_9b():
    config = released_config("longllava-9b")
    tokens = 1000 * (144 + 7)
    # 4 attention layers x (K + V) x 8 KV heads x 128; the embeddings (4096 wide); one 8192-token
    # chunk of the MLP's 14336-wide activations x 4; bf16.
    by_hand = 2 * (tokens * 4 * 2 * 8 * 128 + tokens * 4096 + 8192 * 4 * 14336)
    assert prompt_memory_bytes(config, tokens, itemsize=2) == by_hand
    assert 4 * 2**30 < by_hand < 5 * 2**30


def test_a_prompt_beyond_free_memory_is_refused_with_the_figures(tiny, prompt, monkeypatch):
    model, _ = tiny
    ids, pixels = prompt
    monkeypatch.setattr(generation, "available_memory_bytes", lambda device: 1000)
    with pytest.raises(InputError, match=r"prompt of 159 tokens x 1 \(1 images\) needs about .* GiB.*fewer images"):
        generate(model, ids, pixels, settings=GenerationSettings(max_new_tokens=2))


def test_ask_cli_generation_flags(fixtures, capsys):
    image = str(fixtures / "pathology" / "ihc_colon.png")
    base = ["ask", "--model", "tiny-random", "--image", image, "--question", "What is it?", "--max-new-tokens", "5"]
    assert main([*base, "--json"]) == 0
    greedy = capsys.readouterr().out
    assert main([*base, "--json"]) == 0 and capsys.readouterr().out.split('"seconds"')[0] == greedy.split('"seconds"')[0]
    assert main([*base, "--stream"]) == 0
    streamed = capsys.readouterr().out
    assert "untrained random weights" in streamed.splitlines()[0]
    assert main([*base, "--temperature", "1.5", "--top-p", "0.9", "--seed", "3", "--json"]) == 0
    assert main([*base, "--temperature", "0"]) == 2
    assert "temperature must be positive" in capsys.readouterr().err
