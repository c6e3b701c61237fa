"""Tiny real models: coherent reward by hand, masking, and that SFT and PPO steps move weights."""

import math

import pytest
import torch

from srppo.config.params import PPOConfig
from srppo.data.batch import collate, encode_prompt, encode_response
from srppo.methods.ppo.trainer import PPOTrainer, Roles
from srppo.methods.sft import demos_within_max_len, encode_demos, train_sft
from srppo.models.loading import (
    load_causal_lm,
    load_tokenizer,
    load_value_model,
    param_fingerprint,
)
from srppo.models.logprobs import token_logprobs
from srppo.rollout.engine import Generation, SamplingParams, cut_at_eos, make_engine
from srppo.scoring.rewards import RewardNormalizer
from srppo.scoring.score import score

CPU = torch.device("cpu")
MSG = [{"role": "user", "content": "Describe rain in one sentence."}]


def test_same_tokenizer_for_both_tiny_models(tiny_dir, tiny_sft_dir):
    assert load_tokenizer(tiny_dir).get_vocab() == load_tokenizer(tiny_sft_dir).get_vocab()


def test_response_encoding_ends_with_eos_and_mask_covers_it(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    p = encode_prompt(tok, MSG)
    r = encode_response(tok, MSG, "Rain is water.", p)
    assert r[-1] == tok.eos_token_id and tok.eos_token_id not in r[:-1]
    assert tok.decode(r[:-1]) == "Rain is water."
    batch = collate([p, p[:-2]], [r, r[:3]], tok.pad_token_id)
    # logits at t predict token t+1: the mask starts one before the first response token
    assert batch.action_mask[0].sum() == len(r) and batch.action_mask[1].sum() == 3
    assert batch.action_mask[0, len(p) - 2] == 0 and batch.action_mask[0, len(p) - 1] == 1
    assert batch.attention_mask[1].sum() == len(p) - 2 + 3


def test_cut_at_eos_and_truncation():
    assert cut_at_eos([5, 6, 2, 2, 2], eos_id=2, max_new_tokens=5) == ([5, 6, 2], False)
    assert cut_at_eos([5, 6, 7], eos_id=2, max_new_tokens=3) == ([5, 6, 7], True)


def _hand_logprob(model, ids: list[int], start: int) -> float:
    """log p(ids[start:] | ids[:start]) one prefix at a time, with a full softmax: no batching, no masks."""
    total = 0.0
    with torch.no_grad():
        for t in range(start, len(ids)):
            logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
            total += torch.log_softmax(logits.double(), -1)[ids[t]].item()
    return total


def test_coherent_reward_equals_hand_computation(tiny_dir, tiny_sft_dir):
    tok = load_tokenizer(tiny_dir)
    pt = load_causal_lm(tiny_dir, CPU, torch.float32)
    sft = load_causal_lm(tiny_sft_dir, CPU, torch.float32)
    p1 = encode_prompt(tok, MSG)
    p2 = encode_prompt(tok, [{"role": "user", "content": "Tell me one fact about cats in capital letters."}])
    gens = [Generation(p1, encode_response(tok, MSG, "Rain is water.", p1), False),
            Generation(p2, tok("CATS PURR", add_special_tokens=False)["input_ids"], True)]  # truncated: no EOS
    scored = score(gens, sft, pt, tok.pad_token_id, CPU)
    for i, g in enumerate(gens):
        ids = g.prompt_ids + g.response_ids
        want = _hand_logprob(sft, ids, len(g.prompt_ids)) - _hand_logprob(pt, ids, len(g.prompt_ids))
        assert scored.reward_raw[i].item() == pytest.approx(want, abs=1e-4)
    assert scored.truncated.tolist() == [False, True]


def test_sft_steps_change_parameters_and_lower_loss(tiny_dir):
    from srppo.config.params import SFTConfig

    tok = load_tokenizer(tiny_dir)
    model = load_causal_lm(tiny_dir, CPU, torch.float32, trainable=True)
    demos = [{"id": f"d{i}", "messages": MSG, "response": "Rain is water that falls."} for i in range(4)]
    encoded = encode_demos(tok, demos, max_len=128)
    before = param_fingerprint(model)
    history = train_sft(model, tok, encoded, SFTConfig(epochs=30, lr=1e-2, batch_size=4, warmup_ratio=0.0), seed=0)
    assert param_fingerprint(model) != before
    assert history[-1]["loss"] < history[0]["loss"] * 0.7


def test_sft_rejects_rows_over_max_len(tiny_dir):
    from srppo.data.records import DataError

    tok = load_tokenizer(tiny_dir)
    with pytest.raises(DataError, match="row 1 .*max_len=8"):
        encode_demos(tok, [{"id": "x", "messages": MSG, "response": "long answer here"}], max_len=8)


def test_ppo_iteration_updates_actor_and_critic(tiny_dir, tiny_sft_dir):
    tok = load_tokenizer(tiny_sft_dir)
    torch.manual_seed(0)
    roles = Roles(actor=load_causal_lm(tiny_sft_dir, CPU, torch.float32, trainable=True),
                  critic=load_value_model(tiny_sft_dir, CPU, torch.float32),
                  sft=load_causal_lm(tiny_sft_dir, CPU, torch.float32).eval(),
                  pt=load_causal_lm(tiny_dir, CPU, torch.float32).eval())
    cfg = PPOConfig(actor_lr=1e-3, critic_lr=1e-3, mini_batch_size=2)
    engine = make_engine("hf", roles.actor, tok, batch_size=4)
    trainer = PPOTrainer(roles, engine, tok, cfg, SamplingParams(max_new_tokens=6), RewardNormalizer())
    actor0, critic0 = param_fingerprint(roles.actor), param_fingerprint(roles.critic)
    sft0 = param_fingerprint(roles.sft)
    prompts = [encode_prompt(tok, MSG)] * 4
    stats = trainer.iteration(prompts)
    assert param_fingerprint(roles.actor) != actor0
    assert param_fingerprint(roles.critic) != critic0
    assert param_fingerprint(roles.sft) == sft0  # the reference stays frozen
    for key in ("reward_raw", "kl", "policy_loss", "value_loss", "clip_frac", "entropy", "response_length"):
        assert math.isfinite(stats[key])
    # first iteration: the actor *is* p_SFT, so the KL penalty starts at zero
    assert stats["kl"] == pytest.approx(0.0, abs=1e-4)


def test_logprobs_suffix_matches_full_computation(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    model = load_causal_lm(tiny_dir, CPU, torch.float32)
    p = encode_prompt(tok, MSG)
    batch = collate([p, p + [5, 6]], [[7, 8, tok.eos_token_id], [9, tok.eos_token_id]], tok.pad_token_id)
    fast = token_logprobs(model, batch)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    full = torch.log_softmax(logits, -1).gather(-1, batch.input_ids[:, 1:, None])[..., 0] * batch.action_mask
    assert torch.allclose(fast, full, atol=1e-5)


def test_overlength_demos_can_be_dropped_and_counted(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    demos = [{"id": "short", "messages": MSG, "response": "ok"},
             {"id": "long", "messages": MSG, "response": "long answer here " * 20}]
    said = []
    encoded = encode_demos(tok, demos, max_len=40, source="demos.jsonl", overlength="drop", log=said.append)
    assert len(encoded) == 1 and said == ["demos.jsonl: dropped 1 of 2 rows over sft.max_len=40 (rows [2])"]
    with pytest.raises(ValueError, match=r"demos.jsonl row 2 \(id long\).*sft.overlength: drop"):
        encode_demos(tok, demos, max_len=40, source="demos.jsonl")
    # the reward model's stage keeps the same records SFT trains on
    assert [d["id"] for d in demos_within_max_len(tok, demos, 40, overlength="drop")] == ["short"]
