"""Loading the frozen roles and turning records into prompts: shared by the model stages."""

from __future__ import annotations

from srppo.config import RewardConfig, RolloutConfig
from srppo.data.chat import encode_prompt, encode_response
from srppo.data.records import DataError
from srppo.models import checkpoint_activations, load_causal_lm, load_value_model
from srppo.rollout.engine import Generation, SamplingParams, make_engine


def frozen(path, device, dtype):
    return load_causal_lm(path, device, dtype, trainable=False).eval()


def rollout_engine(cfg: RolloutConfig, model, tok, model_path, seed: int, dtype, batch_size: int | None = None):
    """The configured engine sampling from `model` (vLLM starts from `model_path`, the same weights)."""
    return make_engine(cfg.engine, model, tok, batch_size or cfg.batch_size, model_path=str(model_path),
                       options=cfg.vllm, seed=seed, dtype=dtype)


def sampling_params(cfg: RolloutConfig) -> SamplingParams:
    return SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)


def prompt_ids(tok, records: list[dict], source: str = "prompts", max_new_tokens: int = 0,
               context: int | None = None) -> list[list[int]]:
    """Encoded prompts; with `context`, a prompt that leaves no room for `max_new_tokens` is an error."""
    ids = [encode_prompt(tok, r["messages"]) for r in records]
    if context is not None:
        check_context(ids, records, source, max_new_tokens, context)
    return ids


def check_context(ids: list[list[int]], records: list[dict], source: str, max_new_tokens: int, context: int) -> None:
    # checked before generation: past the context a model silently degrades (or crashes mid-run)
    for row, (p, rec) in enumerate(zip(ids, records), start=1):
        if len(p) + max_new_tokens > context:
            raise DataError(source, row, None, f"prompt (id {rec.get('id')}) is {len(p)} tokens; with "
                            f"max_new_tokens={max_new_tokens} it exceeds the model's context of {context} "
                            f"tokens (max_position_embeddings): shorten or filter it, or lower max_new_tokens")


def demo_generations(tok, records: list[dict]) -> list[Generation]:
    """Demonstrations dressed as generations, so they are scored exactly like samples."""
    out = []
    for r in records:
        p = encode_prompt(tok, r["messages"])
        out.append(Generation(p, encode_response(tok, r["messages"], r["response"], p), truncated=False))
    return out


def reward_model_or_none(cfg: RewardConfig, device, dtype):
    """The frozen reward model when PPO optimises one (RM-PPO), else None (the coherent reward)."""
    if cfg.source != "model":
        return None
    from srppo.reward_model import load_reward_model

    return load_reward_model(cfg.model_path, device, dtype).eval()


def recompute_activations(params) -> bool:
    """ppo.activation_checkpointing with 'auto' resolved: on only where the peak binds, i.e. full fine-tuning
    that trains a critic. Critic-free estimators hold one Adam state (4.6 vs 6.2 GB on the embedded
    default) and LoRA a fraction of that: there the recompute would cost time and buy nothing. LoRA's
    shared base is never checkpointed (its frozen roles run on the same modules)."""
    setting = params.ppo.activation_checkpointing
    if params.lora.enabled or setting != "auto":
        return setting and not params.lora.enabled
    from srppo.ppo.estimators import CRITIC_FREE

    return params.ppo.estimator not in CRITIC_FREE


def ppo_roles(params, base_dir, sft_dir, device, dtype, shard=lambda model: model):
    """PPO's actor, critic, p_SFT and p_PT (or the reward model), and a function giving the actor to save.

    Full fine-tuning loads four models (`shard` partitions the frozen ones under ZeRO-3). With
    lora.enabled the four are views on ONE copy of the pretrained weights (srppo/lora.py): p_PT with the
    adapters off, p_SFT = the SFT stage's adapter, actor and critic their own adapters started from it.
    """
    from srppo.ppo.trainer import Roles

    coherent = params.reward.source == "coherent"
    reward_model = None if coherent else shard(reward_model_or_none(params.reward, device, dtype))
    if params.lora.enabled:
        from srppo import lora

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
