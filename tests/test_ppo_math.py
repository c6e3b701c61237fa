"""Exact math on fixed tensors: GAE, PPO losses, whitening, reward placement, registry."""

import pytest
import torch

from srppo.methods.ppo.estimators import gae, get_estimator, register_estimator
from srppo.methods.ppo.losses import (
    kl_penalty,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)
from srppo.scoring.rewards import (
    RewardNormalizer,
    coherent_reward,
    last_action_index,
    place_at_last_token,
    token_rewards,
)


def reference_gae(r, v, gamma, lam):
    """Eq. (5) written out as the double sum it is, for one response (no padding)."""
    T = len(r)
    v_next = v[1:] + [0.0]
    deltas = [r[t] + gamma * v_next[t] - v[t] for t in range(T)]
    adv = [sum((gamma * lam) ** l * deltas[t + l] for l in range(T - t)) for t in range(T)]
    return adv, [a + vv for a, vv in zip(adv, v)]


def test_gae_matches_equation_5_with_padding_on_both_sides():
    r = [0.0, 0.0, 0.5, 2.0]
    v = [0.3, -0.1, 0.4, 1.0]
    want_adv, want_ret = reference_gae(r, v, gamma=1.0, lam=0.95)
    # one prompt position before and two pad positions after the response
    rewards = torch.tensor([[9.0] + r + [7.0, 7.0]])
    values = torch.tensor([[5.0] + v + [3.0, 3.0]])
    mask = torch.tensor([[0.0, 1, 1, 1, 1, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    assert torch.allclose(adv[0, 1:5], torch.tensor(want_adv), atol=1e-6)
    assert torch.allclose(ret[0, 1:5], torch.tensor(want_ret), atol=1e-6)
    assert adv[0, 0] == 0 and adv[0, 5:].abs().sum() == 0


def test_gae_hand_numbers_gamma_lambda():
    # T=2, r=[0, 1], v=[0.5, 0.25], gamma=0.9, lam=0.5:
    # delta1 = 1 - 0.25 = 0.75 ; delta0 = 0 + 0.9*0.25 - 0.5 = -0.275 ; A0 = -0.275 + 0.45*0.75 = 0.0625
    adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.25]]), torch.ones(1, 2), gamma=0.9, lam=0.5)
    assert torch.allclose(adv, torch.tensor([[0.0625, 0.75]]))
    assert torch.allclose(ret, torch.tensor([[0.5625, 1.0]]))


def test_policy_loss_reference_values():
    logp_old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    mask = torch.ones(1, 3)
    loss, m = policy_loss(logp, logp_old, adv, mask, clip_eps=0.2)
    # per token -min(r*A, clip(r)*A): -min(1.5, 1.2) = -1.2 ; -min(0.5, 0.8) = -0.5 ; -min(-2.2, -2.2) = 2.2
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3, abs=1e-6)
    assert m["clip_frac"] == pytest.approx(2 / 3)


def test_policy_loss_ignores_masked_tokens_and_has_gradient():
    logp = torch.zeros(1, 3, requires_grad=True)
    loss, _ = policy_loss(logp, torch.zeros(1, 3), torch.tensor([[1.0, 100.0, 1.0]]), torch.tensor([[1.0, 0.0, 1.0]]))
    loss.backward()
    assert loss.item() == pytest.approx(-1.0)
    assert logp.grad[0, 1] == 0 and logp.grad[0, 0] < 0


def test_value_loss_clipped_and_unclipped():
    values, old = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    returns, mask = torch.tensor([[2.0, 0.5]]), torch.ones(1, 2)
    plain, _ = value_loss(values, old, returns, mask, value_clip=None)
    assert plain.item() == pytest.approx(0.5 * (1.0 + 0.25) / 2)
    clipped, _ = value_loss(values, old, returns, mask, value_clip=0.2)
    # token 0: clipped value 0.2 -> error 3.24 > 1.0 ; token 1: max(0.25, 0.25)
    assert clipped.item() == pytest.approx(0.5 * (3.24 + 0.25) / 2)


def test_whiten_and_masked_mean():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    w = masked_whiten(x, mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_mean(w**2, mask).item() == pytest.approx(1.0, abs=1e-4)
    assert w[0, 3] == 0


def test_sequence_reward_lands_on_eos_or_last_token():
    logp_sft = torch.tensor([[0.0, -1.0, -1.0, -1.0, 0.0], [0.0, -2.0, -2.0, -2.0, -2.0]])
    logp_pt = torch.tensor([[0.0, -2.0, -3.0, -1.5, 0.0], [0.0, -1.0, -1.0, -1.0, -1.0]])
    # row 0: response of 3 tokens ending in EOS; row 1: truncated at the budget (4 tokens)
    mask = torch.tensor([[0.0, 1, 1, 1, 0], [0.0, 1, 1, 1, 1]])
    r = coherent_reward(logp_sft, logp_pt, mask)
    assert r.tolist() == pytest.approx([1.0 + 2.0 + 0.5, -4.0])
    assert last_action_index(mask).tolist() == [3, 4]
    placed = place_at_last_token(r, mask)
    assert placed[0].tolist() == pytest.approx([0, 0, 0, 3.5, 0])
    assert placed[1].tolist() == pytest.approx([0, 0, 0, 0, -4.0])
    assert token_rewards(logp_sft, logp_pt, mask)[0].tolist() == pytest.approx([0, 1.0, 2.0, 0.5, 0])


def test_kl_penalty_and_normalizer():
    assert kl_penalty(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]]), torch.tensor([[1.0, 0.0]])).tolist() \
        == [[0.5, 0.0]]
    norm = RewardNormalizer(shift=2.0, scale=4.0, clip_low=-1.0, clip_high=0.5)
    assert norm(torch.tensor([2.0, 10.0, -100.0])).tolist() == [0.0, 0.5, -1.0]
    assert RewardNormalizer.from_dict(RewardNormalizer().to_dict()) == RewardNormalizer()


def test_estimator_registry():
    assert get_estimator("gae") is gae
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("gae")(gae)
    with pytest.raises(KeyError, match="registered"):
        get_estimator("nope")
