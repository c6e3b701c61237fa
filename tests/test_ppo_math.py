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


def _scored(logp_old, logp_sft, reward_raw, mask):
    from srppo.data.batch import Batch
    from srppo.scoring.score import Scored

    B, T = mask.shape
    batch = Batch(torch.ones(B, T + 1, dtype=torch.long), torch.ones(B, T + 1, dtype=torch.long), mask, 0)
    return Scored(batch, logp_sft, torch.zeros_like(logp_sft), reward_raw, torch.zeros(B, dtype=torch.bool))


@pytest.mark.parametrize("scale", [1.0, 7.75])
def test_kl_coef_is_per_nat_of_the_raw_reward_whatever_the_normalisation(scale):
    """The paper's objective r(x, y) - beta * KL, in nats of the raw coherent reward. Normalising the reward by
    `scale` must scale the KL penalty with it: the per-token rewards times `scale` sum to (r - shift) - beta*KL
    for every response, whatever `scale` is (the old code charged beta per nat of KL against r/scale)."""
    from srppo.config.params import PPOConfig
    from srppo.methods.ppo.experience import build_experience

    cfg = PPOConfig(kl_coef=0.2)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    logp_old = torch.tensor([[-1.0, -0.5, -2.0, 0.0], [-0.1, -0.2, -0.3, -0.4]])
    logp_sft = torch.tensor([[-1.5, -0.5, -1.0, 0.0], [-0.3, -0.2, -0.5, -0.1]])
    reward_raw = torch.tensor([12.0, -3.0])
    norm = RewardNormalizer(shift=2.0, scale=scale)
    exp = build_experience(_scored(logp_old, logp_sft, reward_raw, mask), logp_old, torch.zeros_like(mask), norm, cfg)
    kl = ((logp_old - logp_sft) * mask).sum(-1)
    assert (exp.rewards.sum(-1) * scale).tolist() == pytest.approx((reward_raw - 2.0 - 0.2 * kl).tolist())
    assert exp.info["kl_coef_per_reward_nat"] == pytest.approx(0.2)


@pytest.mark.parametrize("preset", ["configs/paper-mistral7b.yaml", "configs/paper-llama3-8b.yaml"])
def test_paper_presets_charge_section_4_1_beta(preset):
    """§4.1: "the KL coefficient as 0.2 or 0.5": the presets' penalty per nat of KL, in nats of raw reward,
    is exactly that, with the normaliser their calibration fits (any scale)."""
    from srppo.config.files import apply_preset
    from srppo.methods.ppo.experience import kl_coef_normalised

    params = apply_preset(preset)
    assert params.calibrate.normalize and params.ppo.kl_coef in (0.2, 0.5)
    for scale in (0.5, 7.75, 40.0):
        assert kl_coef_normalised(params.ppo.kl_coef, RewardNormalizer(scale=scale)) * scale == pytest.approx(0.2)


def test_explained_variance_and_monte_carlo_returns():
    from srppo.methods.ppo.experience import explained_variance, monte_carlo_returns

    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards = torch.tensor([[0.5, 1.0, 9.0], [0.0, -1.0, 2.0]])
    returns = monte_carlo_returns(rewards, mask, gamma=1.0)
    assert returns.tolist() == [[1.5, 1.0, 0.0], [1.0, 1.0, 2.0]]
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    mean = (1.5 + 1.0 + 1.0 + 1.0 + 2.0) / 5
    assert explained_variance(torch.full_like(returns, mean), returns, mask) == pytest.approx(0.0, abs=1e-6)
    assert explained_variance(torch.zeros_like(returns), returns, mask) == pytest.approx(0.0, abs=1e-6)
    assert explained_variance(-returns, returns, mask) < 0


def test_paired_over_prompts_by_hand():
    """SRPPO minus SFT item by item, per group: the mean difference in points and who alone passed what."""
    from srppo.evaluation.testbed_eval import paired_over_prompts

    def row(i, strict, group="compositional", domain="out", arithmetic=False):
        return {"id": i, "strict": strict, "report_group": group, "domain": domain, "arithmetic": arithmetic}
    sft = [row(0, True), row(1, False), row(2, False), row(3, True), row(4, True, "in_domain", "in"),
           row(5, False, "arithmetic", "in", True)]
    srppo = [row(0, True), row(1, True), row(2, True), row(3, False), row(4, True, "in_domain", "in"),
             row(5, False, "arithmetic", "in", True)]
    d = paired_over_prompts(sft, srppo, n_boot=500)
    assert d["compositional_strict"]["mean"] == pytest.approx(25.0)  # (0 + 100 + 100 - 100) / 4
    assert (d["compositional_strict"]["only_this"], d["compositional_strict"]["only_baseline"]) == (2, 1)
    low, high = d["compositional_strict"]["ci95"]
    assert -100 <= low <= 25.0 <= high <= 100
    assert d["strict_acc"]["n"] == 5 and d["strict_acc"]["mean"] == pytest.approx(20.0)
    assert d["in_domain_strict"] == {"mean": 0.0, "ci95": [0.0, 0.0], "n": 1, "only_this": 0, "only_baseline": 0}
    assert d["arithmetic_em"]["n"] == 1 and "control_strict" not in d  # no control items: no entry
