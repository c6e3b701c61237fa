"""PPO's four roles: actor, critic, p_SFT and p_PT (or the reward model), full weights or LoRA views."""

from __future__ import annotations

from srppo.models.loading import (
    checkpoint_activations,
    frozen,
    load_causal_lm,
    load_value_model,
)
from srppo.scoring.reward_model import reward_model_or_none


def recompute_activations(params) -> bool:
    """ppo.activation_checkpointing with 'auto' resolved: on only where the peak binds, i.e. full fine-tuning
    that trains a critic. Critic-free estimators hold one Adam state (4.6 vs 6.2 GB on the embedded
    default) and LoRA a fraction of that: there the recompute would cost time and buy nothing. LoRA's
    shared base is never checkpointed (its frozen roles run on the same modules)."""
    setting = params.ppo.activation_checkpointing
    if params.lora.enabled or setting != "auto":
        return setting and not params.lora.enabled
    from srppo.methods.ppo.estimators import CRITIC_FREE

    return params.ppo.estimator not in CRITIC_FREE


def ppo_roles(params, base_dir, sft_dir, device, dtype, shard=lambda model: model):
    """PPO's actor, critic, p_SFT and p_PT (or the reward model), and a function giving the actor to save.

    Full fine-tuning loads four models (`shard` partitions the frozen ones under ZeRO-3). With
    lora.enabled the four are views on ONE copy of the pretrained weights (srppo/models/lora.py): p_PT with the
    adapters off, p_SFT = the SFT stage's adapter, actor and critic their own adapters started from it.
    """
    from srppo.methods.ppo.trainer import Roles

    coherent = params.reward.source == "coherent"
    reward_model = None if coherent else shard(reward_model_or_none(params.reward, device, dtype))
    if params.lora.enabled:
        from srppo.models import lora

        lora.require_adapter(sft_dir)
        shared, views = lora.shared_roles(base_dir, sft_dir, device, dtype, load_causal_lm)
        roles = Roles(views["actor"], views["critic"], views["sft"], views["pt"] if coherent else None, reward_model)
        return roles, lambda: shared.merged("actor")
    roles = Roles(actor=load_causal_lm(sft_dir, device, dtype, trainable=True),
                  critic=load_value_model(sft_dir, device, dtype),
                  sft=shard(frozen(sft_dir, device, dtype)),
                  pt=shard(frozen(base_dir, device, dtype)) if coherent else None, reward_model=reward_model)
    if recompute_activations(params):
        checkpoint_activations(roles.actor)
        checkpoint_activations(roles.critic.body)
    return roles, lambda: roles.actor
