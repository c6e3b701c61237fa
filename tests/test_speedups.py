"""The PPO speedups change no result beyond float noise: the sampling engine's log-probs stand in for an
actor forward, rows are cut to their own width, mini-batches are grouped by length, activations are
recomputed in the backward pass, and AdamW runs fused."""

import math

import pytest
import torch

from srppo.config.files import ConfigError
from srppo.config.params import Params, PPOConfig
from srppo.data.batch import collate, encode_prompt, select_rows
from srppo.methods.ppo.roles import ppo_roles, recompute_activations
from srppo.methods.ppo.trainer import PPOTrainer, Roles
from srppo.models.loading import load_causal_lm, load_tokenizer, load_value_model
from srppo.models.logprobs import shared_prompt_logprobs, token_logprobs
from srppo.rollout.engine import SamplingParams, TokenSampler, make_engine
from srppo.runtime.distributed import adamw
from srppo.scoring.rewards import RewardNormalizer
from srppo.scoring.score import engine_logprobs, in_chunks, recorded_logprobs_are_the_models, score

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


def test_scoring_p_sfts_own_samples_reuses_their_recorded_logprobs(tiny_dir, tiny_sft_dir):
    # the rollouts, calibrate and diagnose stages score p_SFT's own samples: at temperature 1 the hf
    # engine's recorded log-probs are p_SFT's, so score() spares that forward and gives the same reward
    tok = load_tokenizer(tiny_sft_dir)
    sft, pt = load_causal_lm(tiny_sft_dir, CPU, torch.float32), load_causal_lm(tiny_dir, CPU, torch.float32)
    engine = make_engine("hf", sft, tok, batch_size=4)
    torch.manual_seed(0)
    sampling = SamplingParams(max_new_tokens=12)
    gens = engine.generate([encode_prompt(tok, m) for m in PROMPTS], sampling)
    assert recorded_logprobs_are_the_models(engine, sampling)
    for other in (SamplingParams(temperature=0.7), SamplingParams(top_p=0.9), SamplingParams(greedy=True)):
        assert not recorded_logprobs_are_the_models(engine, other)
    with torch.no_grad():
        full = score(gens, sft, pt, tok.pad_token_id, CPU)
        reused = score(gens, None, pt, tok.pad_token_id, CPU, sampled_by_sft=True)  # no p_SFT model at all
    assert torch.allclose(reused.logp_sft, full.logp_sft, atol=1e-4)
    assert torch.allclose(reused.reward_raw, full.reward_raw, atol=1e-3)


def test_hf_engine_shares_a_repeated_prompts_prefill(tiny_sft_dir):
    # grouped prompts (as GRPO samples them) take the shared-prefill path; the log-probs the engine
    # reports still equal a full forward of prompt + response, and greedy decoding is unchanged
    tok = load_tokenizer(tiny_sft_dir)
    model = load_causal_lm(tiny_sft_dir, CPU, torch.float32)
    engine = make_engine("hf", model, tok, batch_size=8)
    caches = []
    prefill = engine._shared_prefill
    engine._shared_prefill = lambda *args: caches.append(prefill(*args)) or caches[-1]
    a, b, c = (encode_prompt(tok, m) for m in PROMPTS[1:])
    prompts = [a, a, a, b, b, b, c, c]
    torch.manual_seed(0)
    gens = engine.generate(prompts, SamplingParams(max_new_tokens=10))
    # the path was taken: one cache for all 8 rows (3 distinct prompts' prefill, copied per row)
    assert caches[0] is not None and caches[0].layers[0].keys.shape[0] == 8
    batch = collate([g.prompt_ids for g in gens], [g.response_ids for g in gens], tok.pad_token_id)
    with torch.no_grad():
        trainer = token_logprobs(model, batch)
    assert torch.allclose(engine_logprobs(gens, trainer), trainer, atol=1e-4)
    greedy = SamplingParams(max_new_tokens=10, greedy=True)
    alone = [make_engine("hf", model, tok, batch_size=1).generate([p], greedy)[0].response_ids for p in (a, b, c)]
    assert [g.response_ids for g in engine.generate(prompts, greedy)] == [alone[k] for k in (0, 0, 0, 1, 1, 1, 2, 2)]


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_token_sampler_draws_from_the_softmax(temperature):
    # 40 steps x 1000 rows = 40k draws over a 6-token vocabulary, one token masked out: the sample frequencies match
    # softmax(logits / T) within sampling noise, the masked token never comes, and the recorded
    # log-prob is the chosen token's
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, float("-inf"), 0.5]]).repeat(1000, 1)
    probs = torch.softmax(logits / temperature, dim=-1)[0]
    sampler = TokenSampler(temperature, torch.Generator().manual_seed(0))
    counts = torch.zeros(6)
    for _ in range(40):
        out = sampler(torch.zeros(1000, 1, dtype=torch.long), logits.clone())
        token = out.argmax(dim=-1)
        assert torch.isfinite(out).sum() == 1000 and (out.max(dim=-1).values == 0).all()
        counts += torch.bincount(token, minlength=6)
    assert counts[4] == 0
    freq = counts / counts.sum()
    assert torch.allclose(freq, probs, atol=4 * (probs * (1 - probs) / counts.sum()).sqrt().max().item())
    recorded = sampler.logprobs(1000)
    assert recorded.shape == (1000, 40)
    assert torch.allclose(recorded[:, -1], torch.log(probs)[token], atol=1e-6)


def test_top_p_and_greedy_report_no_logprobs(tiny_sft_dir):
    tok = load_tokenizer(tiny_sft_dir)
    engine = make_engine("hf", load_causal_lm(tiny_sft_dir, CPU, torch.float32), tok, batch_size=4)
    prompts = [encode_prompt(tok, PROMPTS[0])]
    assert engine.generate(prompts, SamplingParams(max_new_tokens=4, top_p=0.9))[0].logprobs is None
    assert engine.generate(prompts, SamplingParams(max_new_tokens=4, greedy=True))[0].logprobs is None


@pytest.mark.parametrize("rows", [None, 5])
def test_shared_prompt_forward_gives_the_per_row_log_probs(tiny_dir, rows):
    # groups of 3 and 4 samples of prompts of different lengths, responses of 1 to 6 tokens; a prompt
    # that comes back later in the batch still shares its group's forward
    tok = load_tokenizer(tiny_dir)
    model = load_causal_lm(tiny_dir, CPU, torch.float32)
    a, b, c = (encode_prompt(tok, m) for m in PROMPTS[:3])
    prompts = [a, a, a, b, b, b, b, c, a]
    responses = [[7, 9, tok.eos_token_id], [8], [5, 6, 7, 8, 9, 10], [11, 12], [13, tok.eos_token_id],
                 [14, 15, 16, 17], [18], [19, 20, 21], [22, 23]]
    batch = collate(prompts, responses, tok.pad_token_id)
    with torch.no_grad():
        expected = token_logprobs(model, batch)
    shared = shared_prompt_logprobs(model, prompts, responses, batch, tok.pad_token_id, rows=rows)
    assert torch.allclose(shared, expected, atol=1e-5), (shared - expected).abs().max()
    assert (shared * batch.action_mask).sum() < 0


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


def _iteration(tiny_dir, tiny_sft_dir, logp_old: str = "auto", mini_batch_size: int = 2, wrap=lambda e: e,
               **ppo) -> dict:
    """One PPO iteration on the tiny models; `wrap` dresses the hf engine (the mismatched engine below)."""
    tok = load_tokenizer(tiny_sft_dir)
    torch.manual_seed(0)
    roles = Roles(actor=load_causal_lm(tiny_sft_dir, CPU, torch.float32, trainable=True),
                  critic=load_value_model(tiny_sft_dir, CPU, torch.float32),
                  sft=load_causal_lm(tiny_sft_dir, CPU, torch.float32).eval(),
                  pt=load_causal_lm(tiny_dir, CPU, torch.float32).eval())
    cfg = PPOConfig(actor_lr=1e-3, critic_lr=1e-3, mini_batch_size=mini_batch_size, logp_old=logp_old, **ppo)
    trainer = PPOTrainer(roles, wrap(make_engine("hf", roles.actor, tok, batch_size=4)), tok, cfg,
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


def _gradients(tiny_dir, tiny_sft_dir, checkpointing: bool) -> dict:
    """Actor and critic gradients of one loss, with the roles as the ppo stage builds them."""
    params = Params.model_validate({"ppo": {"activation_checkpointing": checkpointing}})
    roles, _ = ppo_roles(params, tiny_dir, tiny_sft_dir, CPU, torch.float32)
    assert roles.actor.is_gradient_checkpointing == checkpointing
    assert roles.critic.body.is_gradient_checkpointing == checkpointing
    batch = _batch(load_tokenizer(tiny_sft_dir))
    logp = token_logprobs(roles.actor, batch)
    values = roles.critic(batch.input_ids, batch.attention_mask)
    (logp.sum() + (values ** 2).mean()).backward()
    return {f"{role}.{name}": p.grad.clone() for role, model in (("actor", roles.actor), ("critic", roles.critic))
            for name, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_gives_the_same_gradients(tiny_dir, tiny_sft_dir):
    kept, recomputed = (_gradients(tiny_dir, tiny_sft_dir, flag) for flag in (False, True))
    assert kept.keys() == recomputed.keys() and any(k.startswith("critic.") for k in kept)
    for name, grad in kept.items():
        assert torch.allclose(grad, recomputed[name], atol=1e-6), name


def test_fused_adamw_steps_like_torchs_default():
    torch.manual_seed(0)
    weights = [torch.randn(64, 32), torch.randn(32)]
    frozen = torch.randn(8, requires_grad=False)
    runs = []
    fused, default = (lambda ps: adamw(ps + [frozen], 1e-2, 0.1),
                      lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1))
    for make in (fused, default):
        ps = [w.clone().requires_grad_(True) for w in weights]
        opt = make(ps)
        assert sum(len(group["params"]) for group in opt.param_groups) == 2  # the frozen tensor is left out
        for step in range(3):
            for k, p in enumerate(ps):
                p.grad = torch.full_like(p, 0.1 * (step + k + 1)).sin()
            opt.step()
        runs.append(ps)
    for fused, default in zip(*runs):
        assert torch.allclose(fused, default, atol=1e-6)


@pytest.mark.parametrize("ppo, lora, expected", [
    ({}, False, False), ({"activation_checkpointing": "auto"}, False, True),
    ({"activation_checkpointing": "auto", "estimator": "grpo", "group_size": 4}, False, False),
    ({"activation_checkpointing": "auto"}, True, False),
    ({"activation_checkpointing": False}, False, False),
    ({"activation_checkpointing": True, "estimator": "rloo", "group_size": 2}, False, True),
    ({"activation_checkpointing": True}, True, False)])
def test_auto_checkpointing_only_where_the_peak_binds(ppo, lora, expected):
    assert recompute_activations(Params.model_validate({"ppo": ppo, "lora": {"enabled": lora}})) is expected


def test_auto_engine_keeps_the_transformers_engine_where_vllm_cannot_help(tiny_sft_dir):
    # PPO's live actor off a GPU, LoRA's shared base, and a model vLLM's CPU attention has no kernel for
    # (the tiny model's head size is 8) all sample with the transformers engine; an explicit choice is kept
    from srppo.config.params import RolloutConfig
    from srppo.rollout.sampling import engine_name

    auto = RolloutConfig()
    assert auto.engine == "auto"
    assert engine_name(auto, tiny_sft_dir) == "hf"
    assert engine_name(auto, tiny_sft_dir, trains=True) == "hf"
    assert engine_name(auto, tiny_sft_dir, shared_base=True) == "hf"
    assert engine_name(auto, tiny_sft_dir, tokens=100) == "hf"  # too small a job for vLLM's start
    assert engine_name(RolloutConfig(engine="vllm"), tiny_sft_dir) == "vllm"
    assert engine_name(RolloutConfig(engine="hf"), tiny_sft_dir) == "hf"


def test_vllm_calls_take_what_one_prefill_step_takes():
    # each call's prompts fit one prefill step (no split prefill: vLLM cannot rewind a seeded CPU generator),
    # in order, every prompt once; a prompt longer than the budget goes alone
    from srppo.rollout.vllm_engine import prefill_chunks

    prompts = [[1] * n for n in (30, 30, 30, 50, 120, 10, 10)]
    chunks = list(prefill_chunks(prompts, budget=100, limit=3))
    assert [(start, [len(p) for p in c]) for start, c in chunks] == [
        (0, [30, 30, 30]), (3, [50]), (4, [120]), (5, [10, 10])]
    assert [p for _, c in chunks for p in c] == prompts
    assert list(prefill_chunks([], 100)) == []


class MismatchedEngine:
    """The hf engine, reporting each sampled token's log-prob `shift` nats off the trainer's: what an engine with
    other kernels or another precision (vLLM in bf16) hands PPO, exaggerated and made uniform."""

    logprobs_match_trainer = False

    def __init__(self, inner, shift: float):
        self.inner, self.shift = inner, shift

    def generate(self, prompts, params, progress=None, rows=None):
        from srppo.rollout.engine import Generation

        return [Generation(g.prompt_ids, g.response_ids, g.truncated, [lp + self.shift for lp in g.logprobs])
                for g in self.inner.generate(prompts, params, progress)]

    def sync_weights(self, model) -> float:
        return 0.0

    def close(self) -> None:
        pass


def _mismatched_iteration(tiny_dir, tiny_sft_dir, shift: float, is_cap: float | None) -> dict:
    return _iteration(tiny_dir, tiny_sft_dir, mini_batch_size=8, is_cap=is_cap,
                      wrap=lambda engine: MismatchedEngine(engine, shift))


@pytest.mark.parametrize("shift, weight", [(-0.5, math.exp(0.5)), (-1.0, 2.0)])  # under the cap 2, and capped
def test_truncated_importance_sampling_corrects_an_engine_that_samples_from_another_distribution(
        tiny_dir, tiny_sft_dir, shift, weight):
    plain = _mismatched_iteration(tiny_dir, tiny_sft_dir, shift, is_cap=None)
    corrected = _mismatched_iteration(tiny_dir, tiny_sft_dir, shift, is_cap=2.0)
    assert "is_ratio_mean" not in plain  # off: no weights, PPO as before
    assert corrected["engine_logprob_gap_max"] == pytest.approx(-shift, abs=1e-4)
    assert corrected["is_ratio_mean"] == pytest.approx(math.exp(-shift), rel=1e-4)
    assert corrected["is_capped_frac"] == (1.0 if math.exp(-shift) > 2.0 else 0.0)
    # one mini-batch, one step: the policy gradient is the plain one times the (uniform) truncated weight
    assert corrected["actor_grad_norm"] == pytest.approx(weight * plain["actor_grad_norm"], rel=1e-4)
    assert corrected["reward_raw"] == plain["reward_raw"] and corrected["value_loss"] == plain["value_loss"]



def _demos(tok, n=6):
    from srppo.methods.sft import encode_demos

    answers = ["Rain is water.", "Red, green and blue are three colours here.", "Hi!", "Waves fold; salt wind; gulls."]
    return encode_demos(tok, [{"id": f"d{i}", "messages": PROMPTS[i % 4], "response": answers[i % 4] * (1 + i // 4)}
                              for i in range(n)], max_len=128)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_packed_forwards_give_the_padded_forwards_log_probs_entropies_and_values(tiny_sft_dir, temperature):
    from srppo.models.packing import packs, set_packing

    tok = load_tokenizer(tiny_sft_dir)
    model = load_causal_lm(tiny_sft_dir, CPU, torch.float32)
    critic = load_value_model(tiny_sft_dir, CPU, torch.float32)
    torch.nn.init.normal_(critic.value_head.weight)  # a head that reads the hidden state (it starts at zero)
    batch = collate([p for p, _ in _demos(tok)], [r for _, r in _demos(tok)], tok.pad_token_id)
    set_packing(True)
    assert packs(model, batch.input_ids, batch.attention_mask) and packs(critic.body, batch.input_ids,
                                                                         batch.attention_mask)
    out = {}
    for on in (False, True):
        set_packing(on)
        with torch.no_grad():
            out[on] = (*token_logprobs(model, batch, with_entropy=True, temperature=temperature),
                       critic(batch.input_ids, batch.attention_mask) * batch.attention_mask)
    for padded, packed in zip(out[False], out[True]):
        assert padded.shape == packed.shape
        assert torch.allclose(padded, packed, atol=1e-4), (padded - packed).abs().max()
    assert out[True][0].abs().sum() > 0 and out[True][2].abs().sum() > 0


def test_packing_is_left_out_where_it_would_not_pay(tiny_sft_dir):
    from srppo.models import packing

    tok = load_tokenizer(tiny_sft_dir)
    model = load_causal_lm(tiny_sft_dir, CPU, torch.float32)
    packing.set_packing(True)
    even = collate([[5] * 20] * 4, [[6] * 10] * 4, tok.pad_token_id)  # no padding to save
    assert not packing.packs(model, even.input_ids, even.attention_mask)
    short, long = [7] * 20, [7] * (packing.MAX_PACKED // 2)
    wide = collate([short, long, long], [[8, 9]] * 3, tok.pad_token_id)  # padded enough, but over MAX_PACKED
    assert wide.attention_mask.float().mean() < 1 - packing.MIN_PADDING
    assert int(wide.attention_mask.sum()) > packing.MAX_PACKED and not packing.packs(model, wide.input_ids,
                                                                                      wide.attention_mask)


def test_packed_gradients_are_the_padded_ones(tiny_sft_dir):
    from srppo.models.packing import set_packing

    tok = load_tokenizer(tiny_sft_dir)
    batch = collate([p for p, _ in _demos(tok)], [r for _, r in _demos(tok)], tok.pad_token_id)
    grads = {}
    for on in (False, True):
        set_packing(on)
        model = load_causal_lm(tiny_sft_dir, CPU, torch.float32, trainable=True)
        (token_logprobs(model, batch).sum() / batch.action_mask.sum()).backward()
        grads[on] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads[False], grads[True]):
        assert torch.allclose(a, b, atol=1e-5)


def test_sft_trains_packed_as_it_trains_padded(tiny_dir, monkeypatch):
    from srppo.config.params import SFTConfig
    from srppo.methods.sft import train_sft
    from srppo.models import logprobs
    from srppo.models.packing import set_packing

    tok = load_tokenizer(tiny_dir)
    encoded = _demos(tok, 8)
    packed_forwards = []
    real = logprobs._packed_token_logprobs
    monkeypatch.setattr(logprobs, "_packed_token_logprobs", lambda *a: packed_forwards.append(1) or real(*a))
    runs = {}
    for on in (True, False):
        set_packing(on)
        model = load_causal_lm(tiny_dir, CPU, torch.float32, trainable=True)
        runs[on] = (train_sft(model, tok, encoded, SFTConfig(epochs=3, lr=1e-3, batch_size=4, warmup_ratio=0.0),
                              seed=0), model)
    (packed, packed_model), (padded, padded_model) = runs[True], runs[False]
    assert packed_forwards  # the packed run did pack its micro-batches
    assert [r["loss"] for r in packed] == pytest.approx([r["loss"] for r in padded], abs=1e-4)
    assert [r["tokens"] for r in packed] == [r["tokens"] for r in padded]
    for a, b in zip(packed_model.parameters(), padded_model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_a_model_whose_attention_ignores_packing_runs_padded(tiny_dir, monkeypatch):
    """transformers before 4.54 (or a model with mask code of its own) does not read packed rows from position ids:
    each row would see the rows before it. The first packed forward's check notices; the model runs padded."""
    import transformers.masking_utils as masking
    from srppo.models import packing

    tok = load_tokenizer(tiny_dir)
    encoded = _demos(tok)
    batch = collate([p for p, _ in encoded], [r for _, r in encoded], tok.pad_token_id)
    said = []
    monkeypatch.setattr(packing, "log", lambda stage, msg: said.append(msg))
    packing.set_packing(True)
    good = load_causal_lm(tiny_dir, CPU, torch.float32)
    assert packing.packs(good, batch.input_ids, batch.attention_mask) and not said
    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    leaky = load_causal_lm(tiny_dir, CPU, torch.float32)
    assert not packing.packs(leaky, batch.input_ids, batch.attention_mask)
    assert "does not keep packed rows apart" in said[-1] and "run padded" in said[-1]
    packing.set_packing(False)
    with torch.no_grad():
        padded = token_logprobs(leaky, batch)
    packing.set_packing(True)
    with torch.no_grad():
        assert torch.equal(token_logprobs(leaky, batch), padded)  # the fallback: the same padded forward
