"""In-process measurements on the embedded default (SmolLM2-135M, CPU), one per child process.

    python bench/workloads.py matmul OUT.json
    python bench/workloads.py sft OUT.json [--precision auto|fp32] [--quick]
    python bench/workloads.py rollout OUT.json [--quick]
    python bench/workloads.py bf16 OUT.json [--quick]
    python bench/workloads.py ppo OUT.json --estimator gae|grpo [--variant default|lora|recompute]
                                          [--precision auto|fp32] [--quick]

`--precision` is `runtime.precision`: `auto` (the default: bf16 autocast where the CPU has bf16 matrix
units) or `fp32` (the path before it, the baseline the speed-ups are measured against).

`bench/run.py` starts each in its own process under `/usr/bin/time -v`, so the peak RSS of one
workload is not hidden by an earlier one and a crash in one does not lose the others. Every workload
calls the library itself (train_sft, run_ppo, the rollout engines); nothing here re-implements it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings (rollout_throughput)

SFT_DIR, BASE_DIR = Path("data/sft"), Path("data/base")
DEMOS, PROMPTS, NORM = (Path("data/prepared/demos.jsonl"), Path("data/prepared/ppo_prompts.jsonl"),
                        Path("data/calibrate/reward_norm.json"))


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), []))
    import transformers

    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "simd": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# -- (a) the machine's matmul rate -------------------------------------------------------------
def matmul_rate(dtype: torch.dtype, n: int, seconds: float, window: float = 0.5) -> list[float]:
    """GFLOP/s of square n x n matmuls (2 n^3 FLOPs each) in consecutive `window`-second windows.

    n = 2048 is the size of the model's largest GEMMs in a training step (B*T ~ 2k rows against a
    576 x 1536 MLP or 576 x 49k head), large enough that the BLAS kernel, not dispatch, sets the rate.
    The best window is the machine's rate: on a shared VM a neighbour's burst only lowers a window.
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):  # warm-up: thread pool, packing buffers
        a @ b
    rates, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < window:
            a @ b
            count += 1
        rates.append(2 * n**3 * count / (time.perf_counter() - t0) / 1e9)
    return rates


def run_matmul(quick: bool) -> dict:
    secs = 0.5 if quick else 4.0
    out = {"n": 2048}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rates = matmul_rate(dtype, 2048, secs)
        out.update({f"{name}_gflops": max(rates), f"{name}_gflops_median": statistics.median(rates),
                    f"{name}_windows": rates})
    return out


# -- (a) SFT training throughput ------------------------------------------------------------------
def use_precision(precision: str) -> str | None:
    """Set this process's mixed precision as `setup_runtime` would for `runtime.precision`, the attention
    kernel of the models loaded from now on and packing (`fp32`: the path before all three, fused SDPA and
    padded forwards; `auto`: the default's `runtime.attention: auto` and `runtime.packing`); the autocast
    dtype's name."""
    from srppo.models.loading import resolve_attention, set_attention
    from srppo.models.packing import set_packing
    from srppo.runtime.precision import resolve_precision, set_autocast_dtype

    dtype = resolve_precision(precision, torch.device("cpu"), torch.float32)
    set_autocast_dtype(dtype)
    set_attention(resolve_attention("sdpa" if precision == "fp32" else "auto", torch.device("cpu")))
    set_packing(precision != "fp32")
    return None if dtype is None else str(dtype).removeprefix("torch.")


def run_sft(quick: bool, precision: str = "auto") -> dict:
    """train_sft on the first demonstrations, default batch size 8; the first optimizer step
    (allocator and kernel warm-up) is timed apart and left out of the rate."""
    from srppo.config.params import SFTConfig
    from srppo.data.records import read_jsonl
    from srppo.methods.sft import encode_demos, train_sft
    from srppo.models.loading import load_causal_lm, load_tokenizer
    from srppo.models.packing import packing

    n_demos = 16 if quick else 48  # 6 steps of 8: ~1 minute on 2 cores
    cfg = SFTConfig(epochs=1.0, checkpoint_every=0)
    tok = load_tokenizer(BASE_DIR)
    encoded = encode_demos(tok, read_jsonl(DEMOS)[:n_demos], cfg.max_len)
    autocast = use_precision(precision)
    model = load_causal_lm(BASE_DIR, torch.device("cpu"), torch.float32, trainable=True)
    stamps = [time.perf_counter()]
    history = train_sft(model, tok, encoded, cfg, seed=0, on_step=lambda row: stamps.append(time.perf_counter()))
    tokens = [h["tokens"] for h in history]  # cumulative real tokens (prompt + response, no padding)
    return {"params": n_params(model), "steps": len(history), "batch_size": cfg.batch_size, "autocast": autocast,
            "packing": packing(),
            "final_loss": history[-1]["loss"],
            "first_step_s": stamps[1] - stamps[0], "tokens": tokens[-1] - tokens[0],
            "seconds": stamps[-1] - stamps[1], "tokens_per_s": (tokens[-1] - tokens[0]) / (stamps[-1] - stamps[1])}


# -- bf16 autocast for the frozen forwards: is the reward and the KL it gives close enough to fp32? ----------
PPO_DIR, ROLLOUTS = Path("data/ppo"), Path("data/rollouts")


def run_bf16(quick: bool) -> dict:
    """The coherent reward r = log p_SFT(y|x) - log p_PT(y|x) of p_SFT's own samples (data/rollouts, T = 1)
    and the KL of the trained actor (data/ppo) to p_SFT on the same rows, computed once in fp32 and once
    under bf16 autocast, each through the library's `score()` and `token_logprobs`: the error bf16 adds,
    against the spread of the quantity itself, and the time of each pass."""
    import pandas as pd

    from srppo.data.batch import collate
    from srppo.models.loading import frozen
    from srppo.models.logprobs import token_logprobs
    from srppo.rollout.engine import Generation
    from srppo.runtime.precision import resolve_precision, set_autocast_dtype
    from srppo.scoring.score import in_chunks, score

    frame = pd.concat(pd.read_parquet(f) for f in sorted(ROLLOUTS.glob("buffer_*.parquet")))
    frame = frame.head(16 if quick else 64)
    gens = [Generation(list(p), list(r), bool(t)) for p, r, t in
            zip(frame["prompt_ids"], frame["response_ids"], frame["truncated"])]
    cpu = torch.device("cpu")
    sft, pt, actor = (frozen(d, cpu, torch.float32) for d in (SFT_DIR, BASE_DIR, PPO_DIR))
    pad = json.loads((SFT_DIR / "generation_config.json").read_text()).get("pad_token_id", 0)
    out = {}
    for name, precision in (("fp32", "fp32"), ("bf16", "bf16")):
        set_autocast_dtype(resolve_precision(precision, cpu, torch.float32))
        t = time.perf_counter()
        with torch.no_grad():
            scored = score(gens, sft, pt, pad, cpu, chunk=16)
            score_s = time.perf_counter() - t
            logp_actor = in_chunks(lambda b: token_logprobs(actor, b), scored.batch, 16)
        mask = scored.batch.action_mask
        out[name] = {"reward": scored.reward_raw, "kl": ((logp_actor - scored.logp_sft) * mask).sum(-1),
                     "logp_sft": (scored.logp_sft * mask).sum(-1), "score_s": score_s}
    set_autocast_dtype(None)
    f32, b16 = out["fp32"], out["bf16"]
    d_reward, d_kl = (b16["reward"] - f32["reward"]).abs(), (b16["kl"] - f32["kl"]).abs()
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    scale = json.loads(NORM.read_text())["scale"]
    # what PPO's advantages are made of: the sequence's return, r - beta * KL (beta per nat of raw reward)
    from srppo.config.params import PPOConfig

    beta = PPOConfig().kl_coef
    ret = lambda o: o["reward"] - beta * o["kl"]
    d_return = (ret(b16) - ret(f32)).abs()
    return {"rows": len(gens), "tokens": int(collate([g.prompt_ids for g in gens], [g.response_ids for g in gens],
                                                      pad).action_mask.sum()),
            "reward_std": float(f32["reward"].std()), "reward_gap_mean": float(d_reward.mean()),
            "reward_gap_max": float(d_reward.max()), "reward_corr": corr(f32["reward"], b16["reward"]),
            "reward_gap_normalised_mean": float(d_reward.mean() / scale), "norm_scale": scale,
            "kl_mean": float(f32["kl"].mean()), "kl_std": float(f32["kl"].std()),
            "kl_gap_mean": float(d_kl.mean()), "kl_gap_max": float(d_kl.max()), "kl_corr": corr(f32["kl"], b16["kl"]),
            "kl_bias": float((b16["kl"] - f32["kl"]).mean()), "reward_bias": float((b16["reward"] - f32["reward"]).mean()),
            "beta": beta, "return_std": float(ret(f32).std()), "return_gap_mean": float(d_return.mean()),
            "return_corr": corr(ret(f32), ret(b16)),
            "logp_sft_gap_mean": float((b16["logp_sft"] - f32["logp_sft"]).abs().mean()),
            "fp32_s": f32["score_s"], "bf16_s": b16["score_s"]}


# -- (b) rollout engine vs one prompt at a time ------------------------------------------------
def run_rollout(quick: bool) -> dict:
    """bench/rollout_throughput.py's timing: one prompt at a time in fp32 (the baseline), the transformers
    engine batched in fp32 (the path before mixed precision) and at `runtime.precision: auto`, and vLLM
    when it is installed; rounds alternate so machine load hits all alike."""
    import importlib.util

    from rollout_throughput import prompt_records, timed_generate

    from srppo.data.batch import encode_prompt
    from srppo.models.loading import frozen, load_causal_lm, load_tokenizer
    from srppo.rollout.engine import SamplingParams, make_engine
    from srppo.runtime.precision import set_autocast_dtype

    n, batch, rounds, max_new = (8, 8, 1, 8) if quick else (32, 16, 2, 48)
    tok = load_tokenizer(SFT_DIR)
    use_precision("fp32")  # the baselines' model: fp32, fused SDPA (the path before)
    model = load_causal_lm(SFT_DIR, torch.device("cpu"), torch.float32)
    prompts = [encode_prompt(tok, r["messages"]) for r in prompt_records()[0][:n]]
    params = SamplingParams(max_new_tokens=max_new)
    auto = use_precision("auto")
    auto_dtype = getattr(torch, auto) if auto else None
    # the sampling stages' own model: frozen(), whose linear weights are stored in the autocast dtype
    set_autocast_dtype(auto_dtype)
    stage_model = frozen(SFT_DIR, torch.device("cpu"), torch.float32)
    set_autocast_dtype(None)
    # name -> (engine, autocast dtype it runs under)
    engines = {"naive": (make_engine("hf", model, tok, 1), None), "batched_fp32": (make_engine("hf", model, tok, batch), None),
               "batched": (make_engine("hf", stage_model, tok, batch), auto_dtype)}
    startup = {}
    if importlib.util.find_spec("vllm") is not None:
        t = time.perf_counter()
        engines["vllm"] = (make_engine("vllm", model, tok, batch, model_path=str(SFT_DIR), seed=0,
                                       dtype=torch.bfloat16 if auto else torch.float32), None)
        startup["vllm"] = time.perf_counter() - t
    for engine, dtype in engines.values():
        set_autocast_dtype(dtype)
        timed_generate(engine, prompts[:2], params)  # warm-up
    runs = {name: [] for name in engines}
    for r in range(rounds):
        for name, (engine, dtype) in engines.items():
            set_autocast_dtype(dtype)
            torch.manual_seed(r)
            runs[name].append(timed_generate(engine, prompts, params))
    set_autocast_dtype(None)
    med = {name: statistics.median(x["tps"] for x in rs) for name, rs in runs.items()}
    best = max((k for k in med if k != "naive"), key=med.get)
    return {"prompts": n, "batch_size": batch, "max_new_tokens": max_new, "rounds": rounds, "runs": runs,
            "autocast": auto, "startup_s": startup, "tps": med, "best": best, "naive_tps": med["naive"],
            "batched_tps": med["batched"], "ratio": med[best] / med["naive"],
            "ratio_batched_fp32": med["batched_fp32"] / med["naive"]}


# -- (a, c, d) SRPPO PPO iterations ---------------------------------------------------------------
def iteration_rows(k: int, per_iter: int) -> slice:
    """The prompts of iteration k, the same for srppo and TRL: rows k*n .. (k+1)*n-1 of the prompt file."""
    return slice(k * per_iter, (k + 1) * per_iter)


def bench_prompts(n_iters: int, per_iter: int) -> list[list[dict]]:
    """The prompt records of each iteration (`iteration_rows`), as TRL's run takes them."""
    from srppo.data.records import read_jsonl

    records = read_jsonl(PROMPTS)
    return [records[iteration_rows(k, per_iter)] for k in range(n_iters)]


def ppo_setup(quick: bool, estimator: str) -> dict:
    """The embedded default's PPO shape: 16 rollouts per iteration, 48 new tokens, mini-batch 8
    (2 optimizer steps per iteration), 1 epoch; grpo samples 4 prompts x 4 (TRL GRPO's shape)."""
    group = 4 if estimator in ("grpo", "rloo") else 1
    # 4 measured iterations after the warm-up one: response lengths swing a single iteration's tokens/s (2 gave
    # grpo 92.9 and 171.6 in one run)
    buffer, max_new, iters = (8, 8, 2) if quick else (16, 48, 5)
    return {"estimator": estimator, "group_size": group, "buffer": buffer, "prompts_per_iter": buffer // group,
            "max_new_tokens": max_new, "iterations": iters, "mini_batch_size": buffer // 2}


def fresh_adapter_dir(out: Path) -> Path:
    """An SFT output holding a fresh LoRA adapter on p_PT (the default rank) next to p_SFT's tokenizer and
    config, for timing and memory: an untrained adapter costs what a trained one does."""
    from srppo.config.params import LoRAConfig
    from srppo.models.loading import load_causal_lm
    from srppo.models.lora import ADAPTER_DIR, add_adapter

    shutil.copytree(SFT_DIR, out, ignore=shutil.ignore_patterns("*.safetensors"), dirs_exist_ok=True)
    add_adapter(load_causal_lm(BASE_DIR, torch.device("cpu"), torch.float32), LoRAConfig()).save_pretrained(
        out / ADAPTER_DIR)
    return out


# ppo workload variants: the defaults, the two PPO speed knobs off, LoRA with one shared base, and
# activations kept instead of recomputed (what gae's default, activation_checkpointing 'auto', trades)
VARIANTS = {"default": {}, "lora": {"lora": {"enabled": True}}, "recompute": {"ppo": {"activation_checkpointing": True}}}


def run_ppo(quick: bool, estimator: str, variant: str = "default", precision: str = "auto") -> dict:
    """The ppo stage's own library call, `run_ppo` (`ppo_roles`: actor, critic, frozen p_SFT and p_PT, or their
    LoRA views; the calibrated normaliser, the hf engine), on fixed prompt batches (`iteration_rows`, through its
    `stream` hook) with no critic warm-up, no checkpoints and no length guard; the first iteration is a
    warm-up. Each iteration's phases are the ones the library times (PPOTrainer.seconds)."""
    import tempfile

    from srppo.config.files import deep_merge
    from srppo.config.params import Params
    from srppo.methods.ppo.roles import recompute_activations
    from srppo.methods.ppo.run import PPOInputs
    from srppo.methods.ppo.run import run_ppo as library_run_ppo
    from srppo.models.loading import setup_runtime

    shape = ppo_setup(quick, estimator)
    params = Params.model_validate(deep_merge({
        "runtime": {"device": "cpu", "precision": precision, "attention": "sdpa" if precision == "fp32" else "auto",
                    "packing": precision != "fp32"},
        "ppo": {"estimator": estimator, "group_size": shape["group_size"], "mini_batch_size": shape["mini_batch_size"],
                "iterations": shape["iterations"], "critic_warmup_buffers": 0, "checkpoint_every": 0,
                "length_guard": 1e9},  # every iteration is measured, whatever the lengths do
        "rollouts": {"max_new_tokens": shape["max_new_tokens"], "buffer_size": shape["buffer"]}}, VARIANTS[variant]))
    dev, dt = setup_runtime(params.runtime, return_freed_memory=True)  # as the stage does: seeds, allocator settings
    # the prompt file's rows in order, `iteration_rows` per iteration (TRL's run takes the same), episode 0
    fixed = lambda prompts, start: ((0, prompts[iteration_rows(k, shape["prompts_per_iter"])])
                                    for k in range(start, shape["iterations"]))
    with tempfile.TemporaryDirectory(prefix="srppo-bench-lora-") as tmp:
        sft_dir = fresh_adapter_dir(Path(tmp)) if params.lora.enabled else SFT_DIR
        run = library_run_ppo(params, PPOInputs(BASE_DIR, sft_dir, PROMPTS, NORM, rollouts=None), dev, dt, stream=fixed)
        run.close()
    rows = []
    for row, phase in zip(run.ppo_rows, run.iteration_seconds):
        # tokens_per_s = attention-mask tokens (prompt + response, all rows) / iteration seconds
        rows.append({"seconds": phase["total"], "tokens": row["tokens_per_s"] * phase["total"],
                     "response_tokens": row["response_length"] * shape["buffer"], "tokens_per_s": row["tokens_per_s"],
                     "generate": phase["generate"], "score": phase["score"], "actor_critic_forward": phase["forward"],
                     "train_actor": phase["train_actor"], "train_critic": phase["train_critic"], "train": phase["train"]})
    actor = run.roles.actor
    model = actor._shared.model if params.lora.enabled else actor  # the whole network either way
    from srppo.runtime.precision import autocast_dtype

    return {**shape, "variant": variant, "precision": precision, "autocast": str(autocast_dtype()),
            "params": n_params(model), "trainable_params": n_params(actor),
            "recompute_activations": recompute_activations(params),
            "warmup": rows[0], "iters": rows[1:],
            **summarise(rows[1:])}


def summarise(rows: list[dict]) -> dict:
    """Totals over the measured iterations: rate = total tokens / total seconds, phases as sums."""
    total = {k: sum(r[k] for r in rows) for k in rows[0]}
    return {"tokens_per_s": total["tokens"] / total["seconds"], "total": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", choices=["matmul", "sft", "rollout", "ppo", "bf16"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--estimator", default="gae")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="default", help="ppo only")
    ap.add_argument("--precision", choices=["auto", "fp32"], default="auto", help="sft and ppo: runtime.precision")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    t = time.perf_counter()
    result = {"matmul": lambda: run_matmul(a.quick), "sft": lambda: run_sft(a.quick, a.precision),
              "rollout": lambda: run_rollout(a.quick), "bf16": lambda: run_bf16(a.quick),
              "ppo": lambda: run_ppo(a.quick, a.estimator, a.variant, a.precision)}[a.workload]()
    result.update(machine=machine(), wall_s=time.perf_counter() - t)
    a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
