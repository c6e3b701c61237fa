"""LoRA fine-tuning in which the four PPO roles share one copy of the base weights.

With `lora.enabled`, SFT trains a low-rank adapter on p_PT instead of all weights. PPO then loads the
pretrained weights once and routes each role's forward through its own adapter:

    p_PT    = base, adapters off            (the coherent reward's denominator)
    p_SFT   = base + "sft" adapter, frozen  (KL reference and the reward's numerator)
    actor   = base + "actor" adapter        (starts as a copy of "sft")
    critic  = base + "critic" adapter + value head (starts as a copy of "sft", head at zero)

Four fp32 copies of a 135M model are 2.2 GB and a 7B model's 112 GB; here it is one copy plus adapters
of a few MB, and the optimizer states shrink with them. Routing sets the active adapter on the LoRA
layers directly: peft's set_adapter/disable_adapter also flip requires_grad, which would silently
freeze the actor whenever p_SFT or p_PT ran.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from srppo.models.loading import values

ADAPTER_DIR = "adapter"  # inside an SFT output directory: the adapter next to the merged weights


def lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
                      bias="none", task_type="CAUSAL_LM")


def add_adapter(model, cfg):
    """Wrap a causal LM for LoRA training: only the adapter's weights are trainable. (peft's "default"
    adapter name: others are saved into a subdirectory.)"""
    require_peft()
    from peft import get_peft_model

    return get_peft_model(model, lora_config(cfg))


def save_sft(peft_model, tok, out_dir: Path, save_pretrained) -> None:
    """The adapter under OUT/adapter, and the merged weights at OUT, so every consumer of p_SFT (eval, vLLM,
    calibration) reads a plain model directory; PPO with LoRA reads the adapter instead."""
    out_dir = Path(out_dir)
    peft_model.save_pretrained(out_dir / ADAPTER_DIR)
    (out_dir / ADAPTER_DIR / "README.md").unlink(missing_ok=True)  # peft's model-card stub
    merged = copy.deepcopy(peft_model).merge_and_unload()
    save_pretrained(merged, tok, out_dir)


def has_adapter(sft_dir) -> bool:
    return (Path(sft_dir) / ADAPTER_DIR / "adapter_config.json").exists()


def require_adapter(sft_dir) -> None:
    if not has_adapter(sft_dir):
        raise FileNotFoundError(f"lora.enabled, but {Path(sft_dir) / ADAPTER_DIR} holds no adapter "
                                f"(adapter_config.json): p_SFT was fully fine-tuned; rerun the sft stage with "
                                f"lora.enabled: true, or set it false")


def require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError as err:
        raise ImportError("lora.enabled needs peft: pip install -e '.[lora]'") from err


def _lora_layers(model) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


class SharedBase:
    """One base model, one adapter per role; `route(name)` makes the next forwards use adapter `name`
    (None: the bare base model)."""

    def __init__(self, base_model, sft_adapter_dir: Path):
        from peft import PeftModel

        base_model.requires_grad_(False)
        self.model = PeftModel.from_pretrained(base_model, str(sft_adapter_dir), adapter_name="sft", is_trainable=False)
        config = self.model.peft_config["sft"]
        for role in ("actor", "critic"):  # both start from p_SFT's adapter
            self.model.add_adapter(role, copy.deepcopy(config))
            state = {k.replace(".sft.", f".{role}."): v for k, v in self._adapter_state("sft").items()}
            self.model.load_state_dict(state, strict=False)
        for name, p in self.model.named_parameters():
            p.requires_grad_(".actor." in name or ".critic." in name)
        self.layers = _lora_layers(self.model)

    def _adapter_state(self, role: str) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if f".{role}." in k and "lora_" in k}

    def adapter_parameters(self, role: str) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if f".{role}." in n and "lora_" in n]

    @contextmanager
    def route(self, role: str | None):
        for layer in self.layers:
            layer._disable_adapters = role is None
            if role is not None:
                layer._active_adapter = [role]
        yield self.model

    def merged(self, role: str):
        """A plain model with `role`'s adapter merged in (for saving); the shared model is left as it was."""
        from peft import PeftModel

        clone = copy.deepcopy(self.model)
        assert isinstance(clone, PeftModel)
        return clone.merge_and_unload(adapter_names=[role])


class AdapterRole(nn.Module):
    """A causal-LM role (actor, p_SFT, p_PT) as a view on the shared base. Its parameters and state are
    its adapter's alone, so optimizers, gradient clipping and checkpoints see only what it trains."""

    def __init__(self, shared: SharedBase, role: str | None):
        super().__init__()
        self._shared, self.role = shared, role  # a plain attribute: the base is not this module's child
        self.config = shared.model.config

    def forward(self, *args, **kwargs):
        with self._shared.route(self.role) as model:
            return model(*args, **kwargs)

    def parameters(self, recurse: bool = True):
        return iter(self._shared.adapter_parameters(self.role) if self.role else [])

    def state_dict(self, *args, **kwargs):
        return {k: v.detach().clone() for k, v in self._shared._adapter_state(self.role).items()} if self.role else {}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        missing = set(self.state_dict()) - set(state)
        if strict and missing:
            raise KeyError(f"adapter '{self.role}' state lacks {sorted(missing)[:3]}")
        return self._shared.model.load_state_dict(state, strict=False)

    def generate(self, *args, **kwargs):
        with self._shared.route(self.role) as model:
            return model.generate(*args, **kwargs)

    def train(self, mode: bool = True):
        self._shared.model.train(mode)
        return self

    @property
    def training(self):  # nn.Module keeps its own flag; a view reports the shared model's
        return self._shared.model.training if hasattr(self, "_shared") else False

    @training.setter
    def training(self, value):
        pass


class CriticRole(nn.Module):
    """The critic as a view: base + "critic" adapter, then a scalar value head (zero at start, §4.1)."""

    def __init__(self, shared: SharedBase, dtype):
        super().__init__()
        self._shared = shared
        self.config = shared.model.config
        self.value_head = nn.Linear(self.config.hidden_size, 1, dtype=dtype)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask):  # (B, T) -> (B, T)
        with self._shared.route("critic") as model:
            return values(model.get_base_model().get_decoder(), self.value_head, input_ids, attention_mask)

    def parameters(self, recurse: bool = True):
        return iter([*self._shared.adapter_parameters("critic"), *self.value_head.parameters()])

    def state_dict(self, *args, **kwargs):
        head = {f"value_head.{k}": v.detach().clone() for k, v in self.value_head.state_dict().items()}
        return {**self._shared._adapter_state("critic"), **head}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        self.value_head.load_state_dict({k.removeprefix("value_head."): v for k, v in state.items()
                                         if k.startswith("value_head.")})
        return self._shared.model.load_state_dict({k: v for k, v in state.items() if not k.startswith("value_head.")},
                                                  strict=False)


def shared_roles(base_dir, sft_dir, device, dtype, load_causal_lm) -> tuple[SharedBase, dict]:
    """actor, critic, sft, pt over one copy of p_PT's weights and p_SFT's adapter."""
    require_peft()
    shared = SharedBase(load_causal_lm(base_dir, device, dtype, trainable=False), Path(sft_dir) / ADAPTER_DIR)
    shared.model.to(device)
    roles = {"actor": AdapterRole(shared, "actor"), "critic": CriticRole(shared, dtype).to(device),
             "sft": AdapterRole(shared, "sft"), "pt": AdapterRole(shared, None)}
    return shared, roles


def adapter_summary(sft_dir) -> dict:
    cfg = json.loads((Path(sft_dir) / ADAPTER_DIR / "adapter_config.json").read_text())
    return {"r": cfg.get("r"), "alpha": cfg.get("lora_alpha"), "target_modules": cfg.get("target_modules")}
