"""A preference reward model as a scorer: load any sequence-classification model, score responses.

The score is read at the last response token (EOS, or the last token when truncated), the same
position where the coherent reward is paid, whatever the padding: the model's own pooling would
stop at the first pad token and SmolLM2 pads with its EOS id. Training one (the RM-PPO baseline)
is srppo/methods/reward_model.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from srppo.config.params import RewardConfig
from srppo.data.batch import Batch
from srppo.models.loading import ModelError, check_weights
from srppo.runtime.precision import autocast
from srppo.scoring.rewards import last_action_index


def load_reward_model(path: str | Path, device, dtype, trainable: bool = False):
    """A sequence-classification model with one output; from a causal LM the head starts at zero."""
    from transformers import AutoModelForSequenceClassification

    path = Path(path)
    check_weights(path)
    model, loading = AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=1, dtype=dtype, use_safetensors=True, output_loading_info=True)
    model = model.to(device)
    head = score_head(model)
    head_names = [n for n, m in model.named_modules() if m is head]
    if any(k.startswith(tuple(head_names)) for k in loading["missing_keys"]):
        # a causal LM's body with a new head: start every answer at the same score, not at noise
        nn.init.zeros_(head.weight)
        if getattr(head, "bias", None) is not None:
            nn.init.zeros_(head.bias)
    model.train(trainable)
    model.requires_grad_(trainable)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model


def reward_model_or_none(cfg: RewardConfig, device, dtype):
    """The frozen reward model when `reward.source` is `model` (RM-PPO), else None (the coherent reward)."""
    if cfg.source != "model":
        return None
    return load_reward_model(cfg.model_path, device, dtype).eval()


def score_head(model) -> nn.Module:
    for name in ("score", "classifier"):  # decoder models (Llama, Mistral, Qwen, GPT-2) name it `score`
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):
            return head
    raise ModelError(f"{type(model).__name__}: no linear `score`/`classifier` head; the reward model must "
                     f"be a sequence-classification model with one label")


def reward_scores(model, batch: Batch) -> torch.Tensor:
    """(B,) scalar reward of each [prompt | response] at its last response token."""
    with autocast(batch.input_ids.device):
        hidden = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    last = last_action_index(batch.action_mask) + 1  # action t predicts input token t + 1
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return score_head(model)(hidden[rows, last].float()).squeeze(-1).float()
