"""Supervised fine-tuning, Eq. (1): maximise log p(y|x) on demonstrations, response tokens only.

`run_sft` is the `sft` stage's one library call: the demonstrations, the model (with a LoRA adapter when
lora.enabled) and `train_sft`, the loop.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from srppo.data.batch import collate, encode_prompt, encode_response
from srppo.data.records import DataError, read_jsonl
from srppo.methods.ppo.losses import masked_mean
from srppo.models import lora
from srppo.models.loading import (
    context_length,
    load_causal_lm,
    load_tokenizer,
    save_pretrained,
)
from srppo.models.logprobs import token_logprobs
from srppo.runtime import distributed, health
from srppo.runtime.distributed import Stepper
from srppo.runtime.stage import Timer, log, progress, training_config


@dataclass
class SFTResult:
    model: torch.nn.Module  # p_SFT as trained (under LoRA: the base with its adapter)
    tokenizer: object
    history: list[dict]     # every optimizer step's row in order (a resumed run's restored rows included)
    train_seconds: float    # the training phase's wall time
    lora_enabled: bool      # whether `model` carries a LoRA adapter

    def save(self, out_dir: str | Path) -> None:
        """p_SFT as a model directory; under LoRA the adapter (for PPO) and the merged weights (for the rest)."""
        if self.lora_enabled:
            lora.save_sft(self.model, self.tokenizer, out_dir, save_pretrained)
        else:
            save_pretrained(self.model, self.tokenizer, out_dir)


def run_sft(params, base_dir: str | Path, demos_path: str | Path, device, dtype, *, ckpt=None,
            timer: Timer | None = None, on_step: Callable[[dict], None] | None = None) -> SFTResult:
    """SFT from `base_dir` on the demonstrations with params' `sft`, `lora` and `runtime` sections, on
    `device`/`dtype` (srppo.models.loading.setup_runtime); under several processes, every rank calls it.

    `ckpt` (a srppo.runtime.checkpoint.Checkpointer) resumes and saves as `train_sft` says (the caller
    clears it once the outputs are written). `timer` gets the training phase (a fresh "sft" one if None);
    `on_step(row)` sees each optimizer step's row as the step ends.
    """
    cfg, seed = params.sft, params.runtime.seed
    timer = timer or Timer("sft")
    check_max_len(cfg.max_len, context_length(base_dir), base_dir)
    tok = load_tokenizer(base_dir)
    encoded = encode_demos(tok, read_jsonl(demos_path), cfg.max_len, demos_path, cfg.overlength,
                           lambda msg: log("sft", msg))
    model = load_causal_lm(base_dir, device, dtype, trainable=True)
    if params.lora.enabled:  # train an adapter; the base weights stay p_PT's
        model = lora.add_adapter(model, params.lora)
    ds_config = training_config(params.runtime, cfg.batch_size, cfg.grad_accum, cfg.max_grad_norm, dtype, cfg.lr)
    n_micro = sum(1 for _ in micro_batches(len(encoded), cfg.batch_size, cfg.epochs, seed))
    phase = f"train {len(encoded)} demos x {cfg.epochs} epochs"
    with timer.phase(phase), progress(-(-n_micro // cfg.grad_accum), "sft", "step") as bar:
        def step_done(row: dict) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            if on_step:
                on_step(row)
        history = train_sft(model, tok, encoded, cfg, seed, step_done, ckpt, ds_config)
    return SFTResult(model, tok, history, timer.phases[phase], params.lora.enabled)


def encode_demos(tok, demos: list[dict], max_len: int, source: str = "demonstrations",
                 overlength: str = "error", log=None) -> list[tuple]:
    """(prompt_ids, response_ids) per demo. A row longer than `max_len` is an error, never a silent cut;
    with overlength='drop' it is left out and the count reported (real data with a few long rows)."""
    return [encoded for _, encoded in _within_max_len(tok, demos, max_len, source, overlength, log)]


def demos_within_max_len(tok, demos: list[dict], max_len: int, source: str = "demonstrations",
                         overlength: str = "error", log=None) -> list[dict]:
    """The demo records `encode_demos` keeps, for stages that train on them in another form."""
    return [demo for demo, _ in _within_max_len(tok, demos, max_len, source, overlength, log)]


def _within_max_len(tok, demos, max_len, source, overlength, log) -> list[tuple[dict, tuple]]:
    kept, dropped = [], []
    for row, demo in enumerate(demos, start=1):
        p = encode_prompt(tok, demo["messages"])
        r = encode_response(tok, demo["messages"], demo["response"], p)
        if len(p) + len(r) > max_len:
            if overlength == "drop":
                dropped.append(row)
                continue
            raise DataError(f"{source} row {row} (id {demo['id']}): prompt+response is {len(p) + len(r)} "
                            f"tokens, over sft.max_len={max_len}; raise it, filter the row or set "
                            f"sft.overlength: drop")
        kept.append((demo, (p, r)))
    if dropped and log:
        log(f"{source}: dropped {len(dropped)} of {len(demos)} rows over sft.max_len={max_len} "
            f"(rows {dropped[:10]}{' ...' if len(dropped) > 10 else ''})")
    if not kept:
        raise DataError(f"{source}: every row is over sft.max_len={max_len}")
    return kept


def check_max_len(max_len: int, context: int | None, model_dir) -> None:
    """sft.max_len must fit the model: longer rows would pass encode_demos and then break the forward."""
    if context is not None and max_len > context:
        raise ValueError(f"sft.max_len={max_len} exceeds the context of {model_dir} ({context} tokens, "
                         f"max_position_embeddings in its config.json); lower sft.max_len")


def lr_at(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10 %: a multiplier on the base learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


# rows sorted by length within groups of this many micro-batches (sft.group_by_length)
LENGTH_GROUP_BATCHES = 8


def micro_batches(n: int, batch_size: int, epochs: float, seed: int, lengths: list[int] | None = None):
    """Shuffled index batches over fractional epochs (the last epoch is cut short).

    With `lengths` (sft.group_by_length), each epoch's shuffled rows are cut into groups of
    LENGTH_GROUP_BATCHES batches, sorted by length inside a group, and the epoch's batches are then
    shuffled: every batch still draws from a random eighth of the data, but its rows have similar lengths,
    so a forward pads little (on the default's demonstrations 71 % of a randomly batched forward's tokens
    are real, 96 % when grouped)."""
    rng = random.Random(seed)
    total = math.ceil(epochs * n / batch_size)
    produced, epoch = 0, 0
    while produced < total:
        order = list(range(n))
        rng.shuffle(order)
        batches = [order[start : start + batch_size] for start in range(0, n, batch_size)]
        if lengths is not None:
            group = batch_size * LENGTH_GROUP_BATCHES
            order = [i for g in range(0, n, group) for i in sorted(order[g : g + group], key=lengths.__getitem__)]
            batches = [order[start : start + batch_size] for start in range(0, n, batch_size)]
            rng.shuffle(batches)
        for batch in batches:
            if produced >= total:
                return
            yield epoch, batch
            produced += 1
        epoch += 1


def train_sft(model, tok, encoded: list[tuple], cfg, seed: int,
              on_step: Callable[[dict], None] | None = None, ckpt=None, ds_config: dict | None = None) -> list[dict]:
    """`ckpt` (a srppo.runtime.checkpoint.Checkpointer) resumes from / saves at optimizer-step boundaries.

    `on_step(row)` sees every optimizer step's row once and in order, as the step ends; a resumed run
    hands it the restored rows first. With several processes each global micro-batch is split across
    ranks and the reported loss is the global token mean, so the curve matches a single-process run
    (srppo.runtime.distributed).
    """
    device = next(model.parameters()).device
    stepper = Stepper(model, cfg.lr, cfg.weight_decay, cfg.max_grad_norm, ds_config, cfg.grad_accum)
    # the whole schedule comes from the seed, so a micro-batch index is a complete data position
    lengths = [len(p) + len(r) for p, r in encoded] if cfg.group_by_length else None
    batches = list(micro_batches(len(encoded), cfg.batch_size, cfg.epochs, seed, lengths))
    total_steps = math.ceil(len(batches) / cfg.grad_accum)
    warmup = max(1, int(cfg.warmup_ratio * total_steps))
    model.train()
    history, accum, tokens, start = [], [], 0, 0
    engines = {"model": stepper.engine}  # under DeepSpeed: its sharded checkpoints (None: plain files)
    saved = ckpt.restore({"model": model}, {"opt": stepper.optimizer}, engines) if ckpt else None
    if saved:
        history, tokens, start = saved["history"], saved["tokens"], saved["next_micro"]
        for row in history if on_step else []:  # the restored steps first, so on_step sees every step
            on_step(row)
    for i in range(start, len(batches)):
        epoch, idx = batches[i]
        loss, global_loss, n_tokens = _micro_batch_loss(model, tok, encoded, i, idx, device)
        accum.append(global_loss)
        tokens += n_tokens
        boundary = len(accum) == cfg.grad_accum or i == len(batches) - 1
        step = len(history)
        stepper.set_lr(cfg.lr * lr_at(step, total_steps, warmup))
        grad_norm = stepper.backward_step(loss, boundary)
        if not boundary:
            continue
        row = {"step": step + 1, "epoch": epoch, "loss": sum(accum) / len(accum),
               "lr": stepper.optimizer.param_groups[0]["lr"], "grad_norm": grad_norm, "tokens": tokens}
        check_step_health(row, history[0]["loss"] if history else row["loss"], len(tok))
        history.append(row)
        accum = []
        if on_step:
            on_step(row)
        if ckpt:
            ckpt.maybe_save(len(history), {"model": model}, {"opt": stepper.optimizer},
                            lambda: {"history": history, "tokens": tokens, "next_micro": i + 1}, engines)
    if history:
        check_final_health(model, tok, encoded, batches[0][1], history, device)
    return history


ADVICE = "Lower sft.lr (or raise sft.warmup_ratio)."


def check_step_health(row: dict, first_loss: float, vocab_size: int) -> None:
    """An optimizer step's loss and gradient norm finite, the loss not blown up (srppo.runtime.health)."""
    health.check_finite("sft", row["step"], ADVICE, loss=row["loss"], grad_norm=row["grad_norm"])
    health.check_blowup("sft", row["step"], "loss", row["loss"], first_loss, ADVICE, vocab_size)


def check_final_health(model, tok, encoded, probe: list[int], history: list[dict], device) -> None:
    """After the last update: every weight finite, and the first batch's loss under the final model finite and
    not blown up against the same rows' loss at step 1 (the run's first loss, before any update)."""
    step = history[-1]["step"]
    health.check_parameters("sft", step, model, "the model", ADVICE)
    with torch.no_grad():
        _, loss, _ = _micro_batch_loss(model, tok, encoded, -1, probe, device, check=False)
    health.check_finite("sft", step, ADVICE, **{"the final model's loss on the first batch": loss})
    health.check_blowup("sft", step, "the final model's loss on the first batch", loss, history[0]["loss"], ADVICE,
                        len(tok))


def _micro_batch_loss(model, tok, encoded, i: int, idx: list[int], device,
                      check: bool = True) -> tuple[torch.Tensor, float, int]:
    """(this rank's scaled loss, the global token-mean loss, the global token count); `check`: a NaN/inf loss is
    an error naming the micro-batch `i` and its rows."""
    mine = distributed.shard(idx)
    share_rows = mine or idx[:1]  # a rank without rows still runs the forward (ZeRO-3 gathers in lockstep)
    batch = collate([encoded[j][0] for j in share_rows], [encoded[j][1] for j in share_rows],
                    tok.pad_token_id).to(device)
    logp = token_logprobs(model, batch)  # packed under runtime.packing: the padding is not computed
    loss = -masked_mean(logp, batch.action_mask)
    if check and not torch.isfinite(loss):
        raise FloatingPointError(f"SFT loss is {loss.item()} at micro-batch {i} (demo rows "
                                 f"{[j + 1 for j in share_rows]}); lower sft.lr")
    n_local = float(batch.action_mask.sum()) if mine else 0.0
    n_global = distributed.all_sum(n_local)
    global_loss = distributed.all_sum(loss.item() * n_local) / max(n_global, 1.0)
    tokens = int(distributed.all_sum(float(batch.attention_mask.sum()) if mine else 0.0))
    return loss * distributed.loss_share(n_local, n_global), global_loss, tokens
