"""The GPU check: the embedded model's SFT and PPO in bf16 on CUDA through the real stages, again under DeepSpeed
ZeRO-2 on one GPU, and the training throughput of a randomly initialised ~1B Llama-shaped model against the GPU's
measured bf16 peak. At most 8 minutes on one H200.

On the GPU machine, from the repository root, after `python tools/gpu_check/prepare.py` here:
    bash tools/gpu_check/run.sh          # installs .gpu-check/wheels, then runs this with --out $OUT
Rehearsal on any machine (CPU, fp32, tiny shapes; checks the plumbing, measures nothing):
    python tools/gpu_check/check.py --rehearse --out /tmp/gpu-check

Writes OUT/gpu.json (every figure), OUT/gpu.md (the table docs/results/gpu.md takes) and OUT/log.txt (the
stages' output). Each stage gets the time it needs and the whole check stops at --budget-s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from srppo.config.files import apply_preset, dump_params  # noqa: E402

PRESET = ROOT / "configs" / "gpu-check.yaml"
MODEL = ROOT / ".gpu-check" / "smollm2"


def stage(name: str, args: list[str], params: Path, log, extra_env: dict | None = None) -> float:
    """Run stages/NAME.py on `params` (SRPPO_PARAMS) and return its wall time; its output goes to the log."""
    env = {**os.environ, "SRPPO_PARAMS": str(params), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    start = time.perf_counter()
    log.write(f"\n=== {name} {' '.join(args)}\n")
    log.flush()
    res = subprocess.run([sys.executable, f"stages/{name}.py", *args], cwd=ROOT, env=env, stdout=log,
                         stderr=subprocess.STDOUT)
    if res.returncode:
        raise SystemExit(f"stage {name} failed ({res.returncode}); see log.txt")
    return round(time.perf_counter() - start, 1)


def random_base(config_dir: Path, out: Path, dtype: torch.dtype, tiny: bool) -> None:
    """The embedded model's architecture and tokenizer with seeded random weights (prepare.py says why)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(config_dir)
    if tiny:
        config.update({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "head_dim": 16})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(out)
    for name in ("chat_template.jinja", "generation_config.json"):
        if (config_dir / name).is_file():
            (out / name).write_bytes((config_dir / name).read_bytes())


def write_params(work: Path, base: Path, rehearse: bool, zero2: bool) -> Path:
    raw = yaml.safe_load(PRESET.read_text())
    raw["base"] = {"name_or_path": str(base), "gguf_package": None, "gguf_file": None}
    if rehearse:
        raw["runtime"].update(device="cpu", dtype="float32", precision="fp32", threads=0)
        raw["prepare"].update(n_demos=16, n_ppo_prompts=64, n_calibration=4, n_eval_per_family=1)
        raw["rollouts"].update(batch_size=8, score_batch_size=8, buffer_size=8, n_buffers=2)
        raw["ppo"].update(iterations=2, critic_warmup_buffers=1, mini_batch_size=4)
    if zero2:
        raw["runtime"]["deepspeed_config"] = str(ROOT / "configs" / "deepspeed" / "zero2.json")
    path = work / ("params-zero2.yaml" if zero2 else "params.yaml")
    tmp = work / "preset.yaml"
    tmp.write_text(yaml.safe_dump(raw))
    path.write_text(dump_params(apply_preset(tmp)))
    return path


def pipeline(work: Path, params: Path, tag: str, log) -> dict:
    """prepare -> sft -> calibrate -> rollouts -> ppo, each stage's wall time and its reported throughput."""
    d, b = work / tag, work / "base"
    seconds = {
        "prepare": stage("prepare", [f"{d}/prepared", f"{d}/m/prepare.json", f"{d}/r/prepare.json"], params, log),
        "sft": stage("sft", [str(b), f"{d}/prepared/demos.jsonl", f"{d}/sft", f"{d}/m/sft.json", f"{d}/r/sft.json",
                             f"{d}/live/sft"], params, log),
        "calibrate": stage("calibrate", [str(b), f"{d}/sft", f"{d}/prepared/calibration.jsonl",
                                         f"{d}/prepared/ppo_prompts.jsonl", f"{d}/norm.json", f"{d}/m/calibrate.json",
                                         f"{d}/r/calibrate.json", f"{d}/calibrate.png"], params, log),
        "rollouts": stage("rollouts", [str(b), f"{d}/sft", f"{d}/prepared/ppo_prompts.jsonl", f"{d}/rollouts",
                                       f"{d}/m/rollouts.json", f"{d}/r/rollouts.json"], params, log),
        "ppo": stage("ppo", [str(b), f"{d}/sft", f"{d}/prepared/ppo_prompts.jsonl", f"{d}/norm.json", f"{d}/rollouts",
                             f"{d}/ppo", f"{d}/m/ppo.json", f"{d}/r/ppo.json", f"{d}/live/ppo"], params, log),
    }
    sft, ppo = (json.loads((d / "r" / f"{s}.json").read_text()) for s in ("sft", "ppo"))
    return {"seconds": seconds, "sft_tokens_per_s": sft.get("tokens_per_s"), "sft_final_loss": sft.get("final_loss"),
            "ppo_tokens_per_s": ppo.get("tokens_per_s"), "ppo_iterations": ppo.get("iterations"),
            "ppo_kl_last": ppo.get("kl_last"), "ppo_phases": ppo.get("seconds")}


def matmul_peak(device: str, dtype: torch.dtype, n: int) -> float:
    """The best FLOP/s of an n x n matmul in `dtype`: the ceiling MFU is held to (measured, not a data sheet)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = 0.0
    for _ in range(3):
        _sync(device)
        start, reps = time.perf_counter(), 10
        for _ in range(reps):
            a @ b
        _sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def llama_throughput(device: str, dtype: torch.dtype, tiny: bool, steps: int = 8) -> dict:
    """Training tokens/s of a randomly initialised Llama-shaped model (~1.1B parameters: 22 layers of width 2048,
    TinyLlama's shape) in `dtype` with AdamW, and its MFU as 6 x parameters x tokens/s."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000)
    batch, seq = 8, 2048
    if tiny:
        shape.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2)
        batch, seq, steps = 2, 64, 2
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**shape, max_position_embeddings=seq)).to(device=device, dtype=dtype)
    model.config._attn_implementation = "sdpa"
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    ids = torch.randint(0, shape["vocab_size"], (batch, seq), device=device)
    times = []
    for i in range(steps + 2):  # two warm-up steps
        _sync(device)
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    step = sorted(times)[len(times) // 2]
    out = {"params": params, "batch": batch, "seq": seq, "step_seconds": round(step, 4),
           "tokens_per_s": round(batch * seq / step, 1)}
    if device == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def markdown(r: dict) -> str:
    t = r["throughput"]
    lines = [f"Device: {r['device']} · torch {r['torch']} · measured bf16 matmul peak "
             f"{r['peak_flops'] / 1e12:.0f} TFLOP/s ({r['peak_n']}² matmul)", "",
             "| Run | SFT stage (s) | SFT tokens/s | PPO stage (s) | PPO tokens/s | PPO iterations |",
             "|---|---|---|---|---|---|"]
    for tag in ("plain", "zero2"):
        p = r.get(tag)
        if p:
            lines.append(f"| {tag} | {p['seconds']['sft']} | {p['sft_tokens_per_s']:.0f} | {p['seconds']['ppo']} | "
                         f"{p['ppo_tokens_per_s']:.0f} | {p['ppo_iterations']} |")
    lines += ["", f"Llama-shaped {t['params'] / 1e9:.2f}B, random weights, batch {t['batch']} x {t['seq']} tokens, "
              f"AdamW: {t['tokens_per_s']:.0f} tokens/s, step {t['step_seconds']} s, MFU {r['mfu']:.1%} of the measured "
              f"peak (6 x parameters x tokens/s)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu-check-out")))
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu-check"))
    ap.add_argument("--rehearse", action="store_true", help="CPU, fp32, tiny shapes: the plumbing, not the figures")
    ap.add_argument("--model", type=Path, default=MODEL, help="the embedded model's config and tokenizer")
    a = ap.parse_args(argv)
    device = "cpu" if a.rehearse else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --rehearse to check the plumbing on a CPU")
    dtype = torch.float32 if a.rehearse else torch.bfloat16
    a.out.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (rehearsal)",
              "torch": torch.__version__, "rehearsal": a.rehearse}
    n = 256 if a.rehearse else 8192
    result["peak_flops"], result["peak_n"] = matmul_peak(device, torch.bfloat16 if device == "cuda" else dtype, n), n
    print(f"[gpu-check] {result['device']}: peak {result['peak_flops'] / 1e12:.1f} TFLOP/s", flush=True)
    random_base(a.model, a.work / "base", dtype, tiny=a.rehearse)
    with open(a.out / "log.txt", "w") as log:
        for tag, zero2 in (("plain", False), ("zero2", True)):
            params = write_params(a.work, a.work / "base", a.rehearse, zero2)
            result[tag] = pipeline(a.work, params, tag, log)
            print(f"[gpu-check] {tag}: {result[tag]['seconds']} ({time.perf_counter() - t0:.0f} s so far)", flush=True)
    result["throughput"] = llama_throughput(device, dtype, tiny=a.rehearse)
    result["mfu"] = 6 * result["throughput"]["params"] * result["throughput"]["tokens_per_s"] / result["peak_flops"]
    result["seconds_total"] = round(time.perf_counter() - t0, 1)
    (a.out / "gpu.json").write_text(json.dumps(result, indent=1))
    (a.out / "gpu.md").write_text(markdown(result))
    print(markdown(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
