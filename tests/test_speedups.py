"""The PPO speedups change no result beyond float noise: the sampling engine's log-probs stand in for an
actor forward, rows are cut to their own width, and mini-batches are grouped by length."""

import pytest
import torch

from srppo.config import ConfigError, PPOConfig, Params
from srppo.data.chat import collate, encode_prompt, select_rows
from srppo.logprobs import token_logprobs
from srppo.models import load_causal_lm, load_tokenizer, load_value_model
from srppo.ppo.experience import engine_logprobs, in_chunks
from srppo.ppo.trainer import PPOTrainer, Roles
from srppo.rewards import RewardNormalizer
from srppo.rollout.engine import SamplingParams, make_engine

CPU = torch.device("cpu")
PROMPTS = [[{"role": "user", "content": text}] for text in
           ("Describe rain in one sentence.", "Name three colours.", "Say hi.", "Write a haiku about the sea now.")]


def _batch(tok, n_extra=(0, 3, 7, 1)):
    prompts = [encode_prompt(tok, m) for m in PROMPTS]
    responses = [[5 + k for k in range(2 + extra)] + [tok.eos_token_id] for extra in n_extra]
    return collate(prompts, responses, tok.pad_token_id)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_hf_engine_logprobs_equal_the_trainers(tiny_sft_dir, temperature):
    tok = load_tokenizer(tiny_sft_dir)
    model = load_causal_lm(tiny_sft_dir, CPU, torch.float32)
    torch.manual_seed(0)
    gens = make_engine("hf", model, tok, batch_size=4).generate(
        [encode_prompt(tok, m) for m in PROMPTS], SamplingParams(max_new_tokens=12, temperature=temperature))
    assert all(g.logprobs is not None and len(g.logprobs) == len(g.response_ids) for g in gens)
    batch = collate([g.prompt_ids for g in gens], [g.response_ids for g in gens], tok.pad_token_id)
    with torch.no_grad():
        trainer = token_logprobs(model, batch, temperature=temperature)
    engine = engine_logprobs(gens, trainer)
    assert torch.allclose(engine, trainer, atol=1e-4), (engine - trainer).abs().max()
    assert (engine * batch.action_mask).sum() < 0  # real log-probs, not zeros


def test_top_p_and_greedy_report_no_logprobs(tiny_sft_dir):
    tok = load_tokenizer(tiny_sft_dir)
    engine = make_engine("hf", load_causal_lm(tiny_sft_dir, CPU, torch.float32), tok, batch_size=4)
    prompts = [encode_prompt(tok, PROMPTS[0])]
    assert engine.generate(prompts, SamplingParams(max_new_tokens=4, top_p=0.9))[0].logprobs is None
    assert engine.generate(prompts, SamplingParams(max_new_tokens=4, greedy=True))[0].logprobs is None


def test_cut_rows_and_sorted_chunks_give_the_full_width_result(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    model = load_causal_lm(tiny_dir, CPU, torch.float32)
    batch = _batch(tok)
    with torch.no_grad():
        full = token_logprobs(model, batch)
        rows = torch.argsort(batch.attention_mask.sum(-1))[:2]
        cut = select_rows(batch, rows)
        assert cut.input_ids.shape[1] < batch.input_ids.shape[1]  # the two shortest rows: narrower
        assert cut.first_action >= batch.first_action
        part = token_logprobs(model, cut)
        assert torch.allclose(part, full[rows][:, : part.shape[1]], atol=1e-5)
        assert not full[rows][:, part.shape[1]:].any()  # nothing but padding was cut
        chunked = in_chunks(lambda b: token_logprobs(model, b), batch, 3)
    assert torch.allclose(chunked, full, atol=1e-5)


def test_length_grouped_minibatches_cover_every_row_once(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    batch = _batch(tok, n_extra=(0, 9, 1, 8))
    trainer = PPOTrainer.__new__(PPOTrainer)
    trainer.cfg, trainer.device = PPOConfig(mini_batch_size=2), CPU
    exp = type("E", (), {"batch": batch})()
    lengths = batch.attention_mask.sum(-1)
    for seed in range(5):
        torch.manual_seed(seed)
        mbs = trainer._minibatches(exp)
        assert sorted(torch.cat(mbs).tolist()) == [0, 1, 2, 3]
        assert sorted(sorted(mb.tolist()) for mb in mbs) == [[0, 2], [1, 3]]  # the two short, the two long
    assert lengths[[0, 2]].max() < lengths[[1, 3]].min()


def _iteration(tiny_dir, tiny_sft_dir, logp_old: str) -> dict:
    tok = load_tokenizer(tiny_sft_dir)
    torch.manual_seed(0)
    roles = Roles(actor=load_causal_lm(tiny_sft_dir, CPU, torch.float32, trainable=True),
                  critic=load_value_model(tiny_sft_dir, CPU, torch.float32),
                  sft=load_causal_lm(tiny_sft_dir, CPU, torch.float32).eval(),
                  pt=load_causal_lm(tiny_dir, CPU, torch.float32).eval())
    cfg = PPOConfig(actor_lr=1e-3, critic_lr=1e-3, mini_batch_size=2, logp_old=logp_old)
    trainer = PPOTrainer(roles, make_engine("hf", roles.actor, tok, batch_size=4), tok, cfg,
                         SamplingParams(max_new_tokens=8), RewardNormalizer(), forward_batch_size=2)
    torch.manual_seed(1)
    return trainer.iteration([encode_prompt(tok, m) for m in PROMPTS])


def test_ppo_iteration_with_engine_logprobs_matches_the_actor_forward(tiny_dir, tiny_sft_dir):
    engine, actor = _iteration(tiny_dir, tiny_sft_dir, "engine"), _iteration(tiny_dir, tiny_sft_dir, "actor")
    assert engine["engine_logprob_gap_max"] < 1e-4 and actor["engine_logprob_gap_max"] < 1e-4
    for key in ("reward_raw", "kl", "policy_loss", "value_loss", "clip_frac", "entropy", "response_length"):
        assert engine[key] == pytest.approx(actor[key], rel=1e-3, abs=1e-5), key


def test_engine_logprobs_under_top_p_are_refused():
    with pytest.raises((ConfigError, ValueError), match="top_p"):
        Params.model_validate({"ppo": {"logp_old": "engine"}, "rollouts": {"top_p": 0.9}})
