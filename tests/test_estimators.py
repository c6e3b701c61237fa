"""Critic-free advantage estimators (grpo, rloo, reinforce_pp), their wiring, and the SPIN loss.

Expected values are written out by hand or recomputed with plain Python loops, never by the code
under test.
"""

import math
import random
from typing import get_args

import pytest
import torch

from srppo.config.files import ConfigError, validate
from srppo.config.params import GROUP_ESTIMATORS, PPOConfig
from srppo.methods.ppo.estimators import CRITIC_FREE, GROUPED, get_estimator, registered
from srppo.methods.spin import spin_loss

# Five responses, two prompts (ids 7 and 3, not contiguous on purpose). Positions outside the mask
# (prompt, padding) hold junk rewards that must not count. Sequence returns R = [1, 3, 0, 1, 5].
REWARDS = torch.tensor([[5.0, -0.1, 1.1, 9.0],
                        [5.0, 0.0, -0.2, 3.2],
                        [0.0, 0.0, 9.0, 9.0],
                        [0.5, -0.5, 0.0, 1.0],
                        [2.0, 2.0, 1.0, 9.0]])
MASK = torch.tensor([[0.0, 1, 1, 0], [0, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]])
GROUPS = torch.tensor([7, 7, 3, 3, 3])


def _call(name, rewards=REWARDS, mask=MASK, groups=GROUPS, **kw):
    return get_estimator(name)(rewards, torch.zeros_like(rewards), mask, groups=groups, **kw)


def _per_row(adv, mask):
    """The one value a sequence-level estimator broadcasts over a row's response tokens."""
    rows = []
    for a, m in zip(adv.tolist(), mask.tolist()):
        vals = {round(x, 6) for x, mm in zip(a, m) if mm}
        assert len(vals) == 1, f"not constant over the response: {vals}"
        rows.append(vals.pop())
    return rows


# -- hand-computed values ----------------------------------------------------------------------

def test_grpo_hand_numbers():
    adv, ret = _call("grpo")
    # prompt 7: R = [1, 3], mean 2, unbiased std sqrt(2)          -> -+1/sqrt(2)
    # prompt 3: R = [0, 1, 5], mean 2, unbiased var (4+1+9)/2 = 7 -> [-2, -1, 3] / sqrt(7)
    assert _per_row(adv, MASK) == pytest.approx([-0.707107, 0.707107, -0.755929, -0.377964, 1.133893], abs=2e-6)
    assert _per_row(ret, MASK) == pytest.approx([1.0, 3.0, 0.0, 1.0, 5.0], abs=1e-6)
    assert (adv * (1 - MASK)).abs().sum() == 0 and (ret * (1 - MASK)).abs().sum() == 0


def test_dr_grpo_only_centres():
    adv, _ = _call("grpo", norm_std=False)
    assert _per_row(adv, MASK) == pytest.approx([-1.0, 1.0, -2.0, -1.0, 3.0], abs=1e-6)


def test_rloo_hand_numbers():
    adv, ret = _call("rloo")
    # prompt 7: 1 - 3, 3 - 1 ; prompt 3: 0 - (1+5)/2, 1 - (0+5)/2, 5 - (0+1)/2
    assert _per_row(adv, MASK) == pytest.approx([-2.0, 2.0, -3.0, -1.5, 4.5], abs=1e-6)
    assert _per_row(ret, MASK) == pytest.approx([1.0, 3.0, 0.0, 1.0, 5.0], abs=1e-6)
    assert (adv * (1 - MASK)).abs().sum() == 0


def test_reinforce_pp_hand_numbers_gamma_half():
    # row 0: a prompt position, then r = [0, -0.1, 1.0]; row 1: r = [-0.2, 0.5], then padding
    rewards = torch.tensor([[7.0, 0.0, -0.1, 1.0], [-0.2, 0.5, 9.0, 9.0]])
    mask = torch.tensor([[0.0, 1, 1, 1], [1, 1, 0, 0]])
    adv, ret = get_estimator("reinforce_pp")(rewards, torch.zeros_like(rewards), mask, gamma=0.5)
    # G = r_t + 0.5 G_{t+1}: row 0 [0.2, 0.4, 1.0], row 1 [0.05, 0.5]
    assert ret.tolist()[0] == pytest.approx([0.0, 0.2, 0.4, 1.0], abs=1e-6)
    assert ret.tolist()[1] == pytest.approx([0.05, 0.5, 0.0, 0.0], abs=1e-6)
    # whitened over all 5 tokens: mean 2.15/5 = 0.43, variance 0.528/5 = 0.1056
    assert adv.tolist()[0] == pytest.approx([0.0, -0.707776, -0.092319, 1.754054], abs=1e-5)
    assert adv.tolist()[1] == pytest.approx([-1.169369, 0.215410, 0.0, 0.0], abs=1e-5)


def test_reinforce_pp_gamma_one_first_token_sees_the_whole_return():
    rewards = torch.tensor([[0.0, -0.1, 1.0], [-0.2, 0.5, 9.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    _, ret = get_estimator("reinforce_pp")(rewards, torch.zeros_like(rewards), mask, gamma=1.0)
    assert ret.tolist()[0] == pytest.approx([0.9, 0.9, 1.0], abs=1e-6)  # R_0 = 0.9 at its first token
    assert ret.tolist()[1] == pytest.approx([0.3, 0.5, 0.0], abs=1e-6)  # R_1 = 0.3, padding ignored


# -- plain-loop references on a random batch -----------------------------------------------------

def ref_sequence_returns(rewards, mask):
    return [sum(r * m for r, m in zip(rr, mm)) for rr, mm in zip(rewards, mask)]


def ref_grpo(R, groups, norm_std):
    out = []
    for i in range(len(R)):
        members = [R[j] for j in range(len(R)) if groups[j] == groups[i]]
        mean = sum(members) / len(members)
        std = math.sqrt(sum((x - mean) ** 2 for x in members) / (len(members) - 1))
        out.append((R[i] - mean) / (std + 1e-6) if norm_std else R[i] - mean)
    return out


def ref_rloo(R, groups):
    out = []
    for i in range(len(R)):
        others = [R[j] for j in range(len(R)) if groups[j] == groups[i] and j != i]
        out.append(R[i] - sum(others) / len(others))
    return out


def ref_reinforce_pp(rewards, mask, gamma):
    """G_t = sum_{k >= t} gamma^(k-t) r_k over one contiguous response, then whitened over all tokens."""
    G = [[sum(gamma ** (k - t) * rr[k] for k in range(t, len(rr)) if mm[k]) if mm[t] else 0.0
          for t in range(len(rr))] for rr, mm in zip(rewards, mask)]
    flat = [g for gg, mm in zip(G, mask) for g, m in zip(gg, mm) if m]
    mean = sum(flat) / len(flat)
    var = sum((g - mean) ** 2 for g in flat) / len(flat)
    return [[(g - mean) / math.sqrt(var + 1e-8) if m else 0.0 for g, m in zip(gg, mm)] for gg, mm in zip(G, mask)], G


def _random_batch(B=7, T=9, seed=0):
    rng = random.Random(seed)
    rewards = [[rng.uniform(-2, 2) for _ in range(T)] for _ in range(B)]
    mask = []
    for _ in range(B):  # prompt prefix, response, right padding
        start = rng.randrange(0, 3)
        end = rng.randrange(start + 1, T + 1)
        mask.append([1.0 if start <= t < end else 0.0 for t in range(T)])
    return rewards, mask, [0, 0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("norm_std", [True, False])
def test_grpo_matches_loop_reference(norm_std):
    rewards, mask, groups = _random_batch()
    want = ref_grpo(ref_sequence_returns(rewards, mask), groups, norm_std)
    adv, _ = _call("grpo", torch.tensor(rewards), torch.tensor(mask), torch.tensor(groups), norm_std=norm_std)
    assert _per_row(adv, torch.tensor(mask)) == pytest.approx(want, abs=1e-5)


def test_rloo_matches_loop_reference():
    rewards, mask, groups = _random_batch(seed=1)
    want = ref_rloo(ref_sequence_returns(rewards, mask), groups)
    adv, _ = _call("rloo", torch.tensor(rewards), torch.tensor(mask), torch.tensor(groups))
    assert _per_row(adv, torch.tensor(mask)) == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_pp_matches_loop_reference(gamma):
    rewards, mask, _ = _random_batch(seed=2)
    want_adv, want_ret = ref_reinforce_pp(rewards, mask, gamma)
    adv, ret = get_estimator("reinforce_pp")(torch.tensor(rewards), torch.zeros(7, 9), torch.tensor(mask), gamma=gamma)
    for got, want in ((adv, want_adv), (ret, want_ret)):
        for g_row, w_row in zip(got.tolist(), want):
            assert g_row == pytest.approx(w_row, abs=1e-5)


# -- edge cases ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kw", [("grpo", {}), ("grpo", {"norm_std": False}), ("rloo", {})])
def test_identical_rewards_in_a_group_give_zero_advantage(name, kw):
    rewards = torch.tensor([[0.0, 2.0], [1.0, 1.0], [0.5, 0.0], [2.0, 0.0]])  # R = 2, 2, then 0.5, 2
    mask = torch.ones(4, 2)
    adv, _ = _call(name, rewards, mask, torch.tensor([0, 0, 1, 1]), **kw)
    assert adv[:2].abs().max() == 0
    assert adv[2:].abs().min() > 0


@pytest.mark.parametrize("name", sorted(GROUPED))
def test_grouped_estimators_reject_missing_or_singleton_groups(name):
    with pytest.raises(ValueError, match="needs `groups`"):
        _call(name, groups=None)
    with pytest.raises(ValueError, match="at least 2 samples"):
        _call(name, groups=torch.tensor([0, 0, 1, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        _call(name, groups=torch.tensor([0, 0, 1, 1]))


def test_registry_sets_match_the_config():
    assert set(get_args(PPOConfig.model_fields["estimator"].annotation)) == set(registered())
    assert set(GROUP_ESTIMATORS) == GROUPED == {"grpo", "rloo"}
    assert CRITIC_FREE == {"grpo", "rloo", "reinforce_pp"}


def test_gae_ignores_groups():
    gae = get_estimator("gae")
    plain = gae(REWARDS, REWARDS * 0.3, MASK)
    grouped = gae(REWARDS, REWARDS * 0.3, MASK, groups=GROUPS, norm_std=False)
    assert all(torch.equal(a, b) for a, b in zip(plain, grouped))


# -- config -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, keys", [
    ({"ppo": {"estimator": "grpo"}}, ["ppo.group_size", "ppo.estimator='grpo'"]),
    ({"ppo": {"estimator": "rloo", "group_size": 1}}, ["ppo.group_size", "got 1"]),
    ({"ppo": {"estimator": "a2c"}}, ["ppo.estimator"]),
    ({"ppo": {"group_size": 0}}, ["ppo.group_size"]),
    ({"ppo": {"estimator": "rloo", "group_size": 3}}, ["rollouts.buffer_size (16)", "ppo.group_size (3)"]),
])
def test_config_errors_name_the_key(raw, keys):
    with pytest.raises(ConfigError) as err:
        validate(raw, "params.yaml")
    for key in keys:
        assert key in str(err.value)


def test_config_accepts_groups_and_critic_free_estimators():
    p = validate({"ppo": {"estimator": "rloo", "group_size": 4}})
    assert (p.ppo.estimator, p.ppo.group_size, p.ppo.grpo_norm_std) == ("rloo", 4, True)
    assert validate({"ppo": {"estimator": "reinforce_pp"}}).ppo.group_size == 1  # no groups needed


# -- wiring ---------------------------------------------------------------------------------------

def test_build_experience_passes_groups_and_leaves_critic_free_advantages_unwhitened():
    from srppo.data.batch import Batch
    from srppo.methods.ppo.experience import build_experience
    from srppo.scoring.rewards import RewardNormalizer
    from srppo.scoring.score import Scored

    mask = torch.tensor([[0.0, 1, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]])
    batch = Batch(torch.zeros(4, 4, dtype=torch.long), torch.ones(4, 4), mask, 0)
    zeros = torch.zeros(4, 3)
    scored = Scored(batch, zeros, zeros, torch.tensor([1.0, 3.0, 0.0, 4.0]), torch.zeros(4, dtype=torch.bool))
    cfg = PPOConfig(estimator="rloo", group_size=2)  # whiten_advantages stays at its default, true
    exp = build_experience(scored, zeros, zeros, RewardNormalizer(), cfg, torch.tensor([0, 0, 1, 1]))
    # no KL (actor = p_SFT), reward at the last token: R = reward_raw, RLOO by hand
    assert _per_row(exp.advantages, mask) == pytest.approx([-2.0, 2.0, -4.0, 4.0])


def test_repeat_prompts_keeps_groups_adjacent():
    from srppo.methods.ppo.trainer import repeat_prompts

    rows, groups = repeat_prompts([[1, 2], [3]], 3, torch.device("cpu"))
    assert rows == [[1, 2]] * 3 + [[3]] * 3
    assert groups.tolist() == [0, 0, 0, 1, 1, 1]
    assert repeat_prompts([[1]], 1, torch.device("cpu")) == ([[1]], None)


def test_rloo_iteration_updates_actor_and_never_touches_the_critic(tiny_dir, tiny_sft_dir):
    from srppo.data.batch import encode_prompt
    from srppo.methods.ppo.trainer import PPOTrainer, Roles
    from srppo.models.loading import (
        load_causal_lm,
        load_tokenizer,
        load_value_model,
        param_fingerprint,
    )
    from srppo.rollout.engine import SamplingParams, make_engine
    from srppo.scoring.rewards import RewardNormalizer

    cpu = torch.device("cpu")
    tok = load_tokenizer(tiny_sft_dir)
    torch.manual_seed(0)
    roles = Roles(actor=load_causal_lm(tiny_sft_dir, cpu, torch.float32, trainable=True),
                  critic=load_value_model(tiny_sft_dir, cpu, torch.float32),
                  sft=load_causal_lm(tiny_sft_dir, cpu, torch.float32).eval(),
                  pt=load_causal_lm(tiny_dir, cpu, torch.float32).eval())

    def no_critic(*args, **kwargs):
        raise AssertionError("a critic-free estimator ran the critic")

    roles.critic.forward = no_critic
    cfg = PPOConfig(estimator="rloo", group_size=2, actor_lr=1e-3, critic_lr=1e-3, mini_batch_size=2)
    trainer = PPOTrainer(roles, make_engine("hf", roles.actor, tok, batch_size=4), tok, cfg,
                         SamplingParams(max_new_tokens=6), RewardNormalizer())
    actor0, critic0 = param_fingerprint(roles.actor), param_fingerprint(roles.critic)
    prompts = [encode_prompt(tok, [{"role": "user", "content": c}]) for c in ("Describe rain.", "Name a cat.")]
    stats = trainer.iteration(prompts)
    assert param_fingerprint(roles.actor) != actor0
    assert param_fingerprint(roles.critic) == critic0
    assert "value_loss" not in stats and math.isfinite(stats["policy_loss"])
    assert trainer.critic_free


# -- SPIN -------------------------------------------------------------------------------------------

def test_spin_loss_hand_numbers():
    pc, pr = torch.tensor([-10.0, -5.0], requires_grad=True), torch.tensor([-12.0, -4.0], requires_grad=True)
    rc, rr = torch.tensor([-11.0, -5.0], requires_grad=True), torch.tensor([-11.0, -5.0])
    loss, m = spin_loss(pc, pr, rc, rr, beta=0.1)
    # row 0: chosen 0.1*(1) = 0.1, rejected 0.1*(-1) = -0.1, margin 0.2 ; row 1: 0, 0.1, margin -0.1
    # -log sigmoid(z) = log(1 + e^-z): (0.598139 + 0.744397) / 2
    assert loss.item() == pytest.approx((0.5981389 + 0.7443967) / 2, abs=1e-6)
    assert m["reward_chosen"] == pytest.approx(0.05) and m["reward_rejected"] == pytest.approx(0.0)
    assert m["reward_margin"] == pytest.approx(0.05) and m["reward_accuracy"] == 0.5
    loss.backward()
    # d/d pc_i = -beta * sigmoid(-margin_i) / B ; sigmoid(-0.2) = 0.450166, sigmoid(0.1) = 0.524979
    assert pc.grad.tolist() == pytest.approx([-0.0225083, -0.0262490], abs=1e-6)
    assert pr.grad.tolist() == pytest.approx([0.0225083, 0.0262490], abs=1e-6)
    assert rc.grad is None  # the opponent is frozen


def test_spin_loss_at_the_reference_is_log_two():
    logp = torch.tensor([-3.0, -7.0, -1.0])
    loss, m = spin_loss(logp, logp - 2, logp, logp - 2)  # default beta 0.1; policy = opponent
    assert loss.item() == pytest.approx(math.log(2))
    assert m["reward_margin"] == 0 and m["reward_accuracy"] == 0


def test_spin_iteration_prefers_demonstrations_and_leaves_the_opponent_frozen(tiny_sft_dir):
    from srppo.config.params import SPINConfig
    from srppo.data.batch import encode_prompt, encode_response
    from srppo.methods.spin import spin_pairs, train_spin_iteration
    from srppo.models.loading import load_causal_lm, load_tokenizer, param_fingerprint
    from srppo.rollout.engine import SamplingParams, make_engine

    cpu = torch.device("cpu")
    tok = load_tokenizer(tiny_sft_dir)
    torch.manual_seed(0)
    model = load_causal_lm(tiny_sft_dir, cpu, torch.float32, trainable=True)
    ref = load_causal_lm(tiny_sft_dir, cpu, torch.float32).eval()
    demos = [([{"role": "user", "content": f"Say the number {i}."}], f"The number is {i}.") for i in range(4)]
    encoded = [(p := encode_prompt(tok, m), encode_response(tok, m, r, p)) for m, r in demos]
    pairs = spin_pairs(make_engine("hf", model, tok, 4), encoded, SamplingParams(max_new_tokens=8))
    assert all(chosen != rejected for _, chosen, rejected in pairs)
    ref0 = param_fingerprint(ref)
    cfg = SPINConfig(epochs=6, lr=1e-3, batch_size=4)
    history = train_spin_iteration(model, ref, tok, pairs, cfg, torch.optim.AdamW(model.parameters(), lr=cfg.lr), 0)
    assert len(history) == 6
    assert history[0]["spin_loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy = opponent at the start
    assert history[-1]["spin_loss"] < history[0]["spin_loss"]
    assert history[-1]["reward_margin"] > 0 and history[-1]["reward_accuracy"] == 1.0
    assert param_fingerprint(ref) == ref0

