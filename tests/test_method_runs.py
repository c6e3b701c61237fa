"""Each training method's one library call, in-process on tiny models: `run_ppo` resumes an interrupted run
bitwise, reports its phases and takes a prompt stream; `run_spin` and `run_reward_model` number their steps
and hand every row to the callback. (tests/test_resume.py kills the real stages under DVC.)"""

import pytest
import torch

from srppo.config.files import validate
from srppo.data.prepare import prepare
from srppo.data.records import write_jsonl
from srppo.io import write_json
from srppo.methods.ppo.run import PPOInputs, run_ppo
from srppo.methods.ppo.trainer import ITERATION_PHASES
from srppo.methods.reward_model import run_reward_model
from srppo.methods.spin import run_spin
from srppo.models.loading import frozen, load_tokenizer, setup_runtime
from srppo.rollout.engine import SamplingParams, make_engine
from srppo.rollout.sampling import prompt_ids
from srppo.runtime.checkpoint import Checkpointer
from srppo.runtime.stage import Timer, beside_output
from srppo.scoring.buffer import buffer_path, to_frame
from srppo.scoring.rewards import RewardNormalizer
from srppo.scoring.rollouts import warmup_prompt_split
from srppo.scoring.score import score

CPU = torch.device("cpu")
SMALL = {
    "runtime": {"device": "cpu"},
    "prepare": {"n_demos": 16, "n_ppo_prompts": 8, "n_calibration": 2, "n_eval_per_family": 1},
    "rollouts": {"max_new_tokens": 8, "batch_size": 4, "buffer_size": 4, "n_buffers": 1},
    "ppo": {"iterations": 4, "critic_warmup_buffers": 1, "critic_warmup_epochs": 1, "mini_batch_size": 2,
            "checkpoint_every": 2},
    "spin": {"iterations": 2, "batch_size": 4, "max_new_tokens": 8},
    "reward_model": {"n_prompts": 12, "samples_per_prompt": 2, "max_new_tokens": 8, "batch_size": 4},
}


class Kill(Exception):
    pass


@pytest.fixture(scope="module")
def params():
    return validate(SMALL)


@pytest.fixture(scope="module")
def data(tmp_path_factory, params, tiny_dir, tiny_sft_dir):
    """The prepared splits, a neutral normaliser and one rollout buffer of p_SFT, as the upstream stages write them."""
    root = tmp_path_factory.mktemp("data")
    for name, recs in prepare(params.prepare).items():
        write_jsonl(root / f"{name}.jsonl", recs)
    write_json(root / "reward_norm.json", RewardNormalizer().to_dict())
    tok = load_tokenizer(tiny_sft_dir)
    sft, pt = frozen(tiny_sft_dir, CPU, torch.float32), frozen(tiny_dir, CPU, torch.float32)
    items = prepare(params.prepare)["ppo_prompts"][:4]
    gens = make_engine("hf", sft, tok, 4).generate(prompt_ids(tok, items), SamplingParams(max_new_tokens=8))
    (root / "rollouts").mkdir()
    to_frame(score(gens, sft, pt, tok.pad_token_id, CPU), gens, items, tok, 0).to_parquet(
        buffer_path(root / "rollouts", 0), index=False)
    return root


def no_clock(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time_") and k != "tokens_per_s"} for r in rows]


def test_interrupted_ppo_run_resumes_bitwise_and_reports_its_phases(tmp_path, params, data, tiny_dir, tiny_sft_dir):
    inputs = PPOInputs(tiny_dir, tiny_sft_dir, data / "ppo_prompts.jsonl", data / "reward_norm.json", data / "rollouts")

    def run(ckpt=None, on_row=None, timer=None):
        device, dtype = setup_runtime(params.runtime)  # seeds, as the stage does
        result = run_ppo(params, inputs, device, dtype, ckpt=ckpt, on_row=on_row, timer=timer)
        result.close()
        return result

    want = run()
    assert [h["phase"] for h in want.history] == ["warmup"] + ["ppo"] * 4 and want.stopped is None
    ckpt = Checkpointer(tmp_path / "ckpt", "fp", every=2, log=lambda m: None)

    def die_at_4(row):  # after the checkpoint at step 2 (warm-up buffer + one iteration)
        if row["step"] == 4:
            raise Kill
    with pytest.raises(Kill):
        run(ckpt, die_at_4)
    seen, timer = [], Timer("ppo")
    got = run(ckpt, seen.append, timer)
    assert no_clock(got.history) == no_clock(want.history)
    assert seen == got.history  # the restored steps too, in order: the live curves are whole
    for a, b in zip(want.actor_to_save().state_dict().values(), got.actor_to_save().state_dict().values()):
        assert torch.equal(a, b)
    # the phases come from the library: the run's on the timer, each iteration's (3 ran after the resume) split
    assert got.seconds == timer.phases and "4 PPO iterations" in got.seconds
    assert len(got.iteration_seconds) == 3 and all(set(s) == set(ITERATION_PHASES) for s in got.iteration_seconds)
    for s, row in zip(got.iteration_seconds, got.ppo_rows[1:]):
        assert s["generate"] == row["time_generate"] and s["train"] == row["time_train"]
        assert s["score"] + s["forward"] <= row["time_experience"] and s["train_actor"] + s["train_critic"] <= s["train"]


def test_a_stream_replaces_the_shuffled_prompts(params, data, tiny_dir, tiny_sft_dir):
    fixed = params.model_copy(update={"ppo": params.ppo.model_copy(update={"iterations": 2, "critic_warmup_buffers": 0})})
    inputs = PPOInputs(tiny_dir, tiny_sft_dir, data / "ppo_prompts.jsonl", data / "reward_norm.json", None)
    starts = []

    def stream(prompts, start):
        starts.append(start)
        return ((7, prompts[:4]) for _ in range(start, 2))
    result = run_ppo(fixed, inputs, *setup_runtime(params.runtime), stream=stream)
    result.close()
    assert starts == [0] and [(h["phase"], h["episode"]) for h in result.history] == [("ppo", 7), ("ppo", 7)]


def test_warmup_prompts_are_never_ppo_prompts():
    for n, need, batch in [(256, 112, 16), (16, 16, 8), (8, 4, 4), (8, 4, 8), (1000, 10, 16)]:
        warmup, ppo = warmup_prompt_split(n, 0, need, batch)
        assert not set(warmup) & set(ppo) and sorted(warmup + ppo) == list(range(n))
        assert len(warmup) == min(need, n - batch) and len(ppo) >= batch
        assert warmup_prompt_split(n, 0, need, batch) == (warmup, ppo)  # the two stages agree
    assert warmup_prompt_split(256, 1, 112, 16)[0] != warmup_prompt_split(256, 0, 112, 16)[0]


def test_critic_warmup_reports_a_held_out_buffer_and_ppo_trains_on_the_other_prompts(
        tmp_path, params, data, tiny_dir, tiny_sft_dir):
    """rollouts.n_buffers = warm-up + 1: the last buffer is held out. Each warm-up row has the critic's fit
    before its updates and on the held-out buffer after them; PPO's prompt stream holds no warm-up prompt."""
    rollouts = tmp_path / "rollouts"
    rollouts.mkdir()
    for i in range(2):  # the second buffer is the held-out one
        buffer_path(rollouts, i).write_bytes(buffer_path(data / "rollouts", 0).read_bytes())
    run_params = params.model_copy(update={
        "rollouts": params.rollouts.model_copy(update={"n_buffers": 2}),
        "ppo": params.ppo.model_copy(update={"iterations": 1, "critic_warmup_buffers": 1})})
    inputs = PPOInputs(tiny_dir, tiny_sft_dir, data / "ppo_prompts.jsonl", data / "reward_norm.json", rollouts)
    streamed = []

    def stream(prompts, start):
        streamed.extend(prompts)
        return ((0, prompts[:4]) for _ in range(start, 1))
    result = run_ppo(run_params, inputs, *setup_runtime(params.runtime), stream=stream)
    result.close()
    warmup = result.history[0]
    assert warmup["phase"] == "warmup" and warmup["kl"] == 0.0
    for key in ("value_loss_before", "value_loss", "heldout_value_loss", "heldout_explained_variance",
                "explained_variance"):
        assert isinstance(warmup[key], float), key
    assert warmup["value_loss_before"] > 0 and warmup["kl_coef_per_reward_nat"] == pytest.approx(params.ppo.kl_coef)
    tok = load_tokenizer(tiny_sft_dir)
    records = prepare(params.prepare)["ppo_prompts"]
    reserved, _ = warmup_prompt_split(len(records), params.runtime.seed, 2 * 4, 4)
    warmup_ids = {tuple(p) for p in prompt_ids(tok, [records[i] for i in reserved])}
    assert streamed and not warmup_ids & {tuple(p) for p in streamed}


def test_spin_and_reward_model_runs_number_every_step_and_hand_it_on(params, data, tiny_sft_dir):
    seen = []
    spin = run_spin(params, tiny_sft_dir, data / "demos.jsonl", *setup_runtime(params.runtime), on_step=seen.append)
    assert seen == spin.history and [h["step"] for h in seen] == list(range(1, len(seen) + 1))
    assert {h["iteration"] for h in seen} == {0, 1} and spin.pairs_per_iteration == 16
    seen = []
    rm = run_reward_model(params, tiny_sft_dir, data / "demos.jsonl", *setup_runtime(params.runtime),
                          on_step=seen.append)
    assert seen == rm.history and [h["step"] for h in seen] == list(range(1, len(seen) + 1))
    assert rm.info["train_pairs"] > 0 and rm.info["final_loss"] == seen[-1]["rm_loss"]


def test_paths_beside_an_output_are_derived_from_it():
    assert beside_output("data/ppo", "debug").as_posix() == "data/debug/ppo"
    assert beside_output("comparison/data/m-s0/srppo/model", "checkpoints").as_posix() == \
        "comparison/data/m-s0/srppo/checkpoints/model"



def test_a_ppo_run_ends_its_warm_up_where_the_held_out_fit_stalls(tmp_path, params, data, tiny_dir, tiny_sft_dir):
    # a real run: 1 warm-up buffer swept 8 times at a value-head rate that memorises it, 1 buffer of other
    # prompts held out; the warm-up ends at the first pass after which the held-out loss has not improved
    # for `critic_warmup_patience` passes, and runs all 8 passes with the patience off
    from srppo.methods.ppo.run import warmup_stalled

    tok = load_tokenizer(tiny_sft_dir)
    sft, pt = frozen(tiny_sft_dir, CPU, torch.float32), frozen(tiny_dir, CPU, torch.float32)
    items = prepare(params.prepare)["ppo_prompts"]
    (tmp_path / "rollouts").mkdir()
    for b in range(2):
        chunk = items[4 * b : 4 * b + 4]
        gens = make_engine("hf", sft, tok, 4).generate(prompt_ids(tok, chunk), SamplingParams(max_new_tokens=8))
        to_frame(score(gens, sft, pt, tok.pad_token_id, CPU), gens, chunk, tok, b).to_parquet(
            buffer_path(tmp_path / "rollouts", b), index=False)
    inputs = PPOInputs(tiny_dir, tiny_sft_dir, data / "ppo_prompts.jsonl", data / "reward_norm.json",
                       tmp_path / "rollouts")

    def warmup_passes(patience):
        run = validate({**SMALL, "rollouts": {**SMALL["rollouts"], "n_buffers": 2},
                        "ppo": {**SMALL["ppo"], "iterations": 1, "critic_warmup_epochs": 8, "value_head_lr": 0.05,
                                "critic_warmup_patience": patience}})
        device, dtype = setup_runtime(run.runtime)
        result = run_ppo(run, inputs, device, dtype)
        result.close()
        return [h for h in result.history if h["phase"] == "warmup"]

    every = warmup_passes(None)
    assert len(every) == 8
    stop = next((k for k in range(1, 9) if warmup_stalled(every[:k], 1, 1)), 8)
    assert stop < 8, [round(h["heldout_value_loss"], 4) for h in every]  # this setting does stall
    stopped = warmup_passes(1)
    assert len(stopped) == stop
    assert [h["heldout_value_loss"] for h in stopped] == [h["heldout_value_loss"] for h in every[:stop]]


def test_critic_warmup_stops_once_the_held_out_loss_stops_improving():
    # the embedded default's held-out value loss over 12 warm-up passes (6 buffers, 2 sweeps): best at
    # pass 3, then rising; with patience 2 the warm-up ends after the first sweep (pass 6), not at 12
    from srppo.methods.ppo.run import warmup_stalled

    losses = [0.1920, 0.1917, 0.1905, 0.1940, 0.1965, 0.2010, 0.2067, 0.2096, 0.2172, 0.2277, 0.2365, 0.2458]
    rows = lambda n: [{"phase": "warmup", "heldout_value_loss": x} for x in losses[:n]]
    stalled = [n for n in range(13) if warmup_stalled(rows(n), patience=2, first_sweep=6)]
    assert stalled[0] == 6
    assert not warmup_stalled(rows(5), patience=2, first_sweep=6)  # within the first sweep: never
    assert not any(warmup_stalled(rows(n), None, 6) for n in range(13))  # patience null: every pass
    assert not warmup_stalled([{"phase": "warmup", "value_loss": 1.0}] * 8, 2, 6)  # no held-out buffer
    improving = [{"phase": "warmup", "heldout_value_loss": 1.0 / (k + 1)} for k in range(12)]
    assert not warmup_stalled(improving, 2, 6)
