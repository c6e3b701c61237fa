"""`runtime.precision`: bf16 autocast over fp32 weights where the chip has bf16 matrix units, fp32 elsewhere.
What must stay fp32 does (weights, gradients, optimizer states, log-probs), and what bf16 computes stays
within its rounding of the fp32 result."""

import pytest
import torch

from srppo.config.files import ConfigError
from srppo.config.params import Params, RuntimeConfig
from srppo.data.batch import collate, encode_prompt
from srppo.models.loading import ModelError, load_causal_lm, load_tokenizer, load_value_model, setup_runtime
from srppo.models.logprobs import token_logprobs
from srppo.rollout.engine import SamplingParams, make_engine
from srppo.runtime.distributed import adamw
from srppo.runtime.precision import (autocast, autocast_dtype, cpu_bf16_units, resolve_precision,
                                     set_autocast_dtype)
from srppo.scoring.score import engine_logprobs

CPU = torch.device("cpu")
AMD = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
XEON = "flags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n"
OLD = "flags\t\t: fpu sse2 avx2\n"
PROMPTS = [[{"role": "user", "content": t}] for t in ("Say hi.", "Name three colours.", "Describe rain briefly.")]


def test_the_cpus_bf16_matrix_units_are_read_from_its_flags():
    assert cpu_bf16_units(AMD) == ["avx512_bf16"]
    assert cpu_bf16_units(XEON) == ["amx_bf16"]
    assert cpu_bf16_units(OLD) == [] and cpu_bf16_units("") == []


@pytest.mark.parametrize("precision, weights, units, expected", [
    ("auto", torch.float32, ["avx512_bf16"], torch.bfloat16),
    ("auto", torch.float32, ["amx_bf16"], torch.bfloat16),
    ("auto", torch.float32, [], None),              # no units: bf16 would be emulated, slower than fp32
    ("fp32", torch.float32, ["amx_bf16"], None),
    ("bf16", torch.float32, ["avx512_bf16"], torch.bfloat16),
    ("auto", torch.bfloat16, ["amx_bf16"], None),   # bf16 weights (GPU presets) need no autocast
])
def test_precision_resolves_per_device(precision, weights, units, expected):
    assert resolve_precision(precision, CPU, weights, cpu_units=units) == expected


def test_bf16_on_a_cpu_without_the_units_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="runtime.precision='bf16'.*no bf16 matrix units"):
        resolve_precision("bf16", CPU, torch.float32, cpu_units=[])


def test_the_knob_is_validated_and_defaults_to_auto():
    assert Params().runtime.precision == "auto"
    with pytest.raises(ValueError, match="precision"):
        RuntimeConfig(precision="half")


def test_setup_runtime_sets_the_process_precision():
    from srppo.models.packing import packing

    setup_runtime(RuntimeConfig(precision="fp32", packing=False))
    assert autocast_dtype() is None and not packing()
    setup_runtime(RuntimeConfig())
    assert packing()  # runtime.packing is on by default
    setup_runtime(RuntimeConfig(precision="auto"))
    assert autocast_dtype() == resolve_precision("auto", CPU, torch.float32)
    if not cpu_bf16_units():
        with pytest.raises(ModelError, match="bf16 matrix units"):
            setup_runtime(RuntimeConfig(precision="bf16"))


def _batch(tok):
    prompts = [encode_prompt(tok, m) for m in PROMPTS]
    return collate(prompts, [[5, 6, 7, tok.eos_token_id], [8, 9, tok.eos_token_id], [10, tok.eos_token_id]],
                   tok.pad_token_id)


def test_a_bf16_training_step_keeps_weights_grads_optimizer_state_and_logprobs_fp32(tiny_sft_dir):
    tok = load_tokenizer(tiny_sft_dir)
    model = load_causal_lm(tiny_sft_dir, CPU, torch.float32, trainable=True)
    batch = _batch(tok)
    with torch.no_grad():
        fp32 = token_logprobs(model, batch)
    set_autocast_dtype(torch.bfloat16)
    logp = token_logprobs(model, batch)
    assert logp.dtype == torch.float32
    mask = batch.action_mask.bool()
    # bf16 rounds each matmul's inputs to 8 bits of mantissa: close to fp32, but not equal to it
    gap = (logp - fp32)[mask].abs()
    assert 0 < gap.max() < 0.1, gap.max()
    opt = adamw(model.parameters(), 1e-3, 0.0)
    before = [p.detach().clone() for p in model.parameters()]
    (-logp.sum()).backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)
    opt.step()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(s.dtype == torch.float32 for st in opt.state.values() for s in st.values() if s.dim())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_critic_reads_its_value_in_fp32_under_bf16(tiny_sft_dir):
    critic = load_value_model(tiny_sft_dir, CPU, torch.float32)
    torch.nn.init.normal_(critic.value_head.weight)
    batch = _batch(load_tokenizer(tiny_sft_dir))
    with torch.no_grad():
        fp32 = critic(batch.input_ids, batch.attention_mask)
        set_autocast_dtype(torch.bfloat16)
        bf16 = critic(batch.input_ids, batch.attention_mask)
    assert bf16.dtype == critic.value_head.weight.dtype == torch.float32
    assert torch.allclose(bf16, fp32, atol=0.1) and not torch.equal(bf16, fp32)


def test_the_hf_engine_samples_under_bf16_and_records_log_probs_of_that_model(tiny_sft_dir):
    tok = load_tokenizer(tiny_sft_dir)
    model = load_causal_lm(tiny_sft_dir, CPU, torch.float32)
    set_autocast_dtype(torch.bfloat16)
    torch.manual_seed(0)
    gens = make_engine("hf", model, tok, batch_size=3).generate(
        [encode_prompt(tok, m) for m in PROMPTS], SamplingParams(max_new_tokens=10))
    batch = collate([g.prompt_ids for g in gens], [g.response_ids for g in gens], tok.pad_token_id)
    with torch.no_grad():
        forward = token_logprobs(model, batch)
    recorded = engine_logprobs(gens, forward)
    assert recorded.dtype == torch.float32
    # the cached decode and the full forward round differently in bf16: close, within bf16's rounding
    assert torch.allclose(recorded, forward, atol=0.1), (recorded - forward).abs().max()


def test_autocast_is_a_no_op_under_fp32():
    set_autocast_dtype(None)
    with autocast(CPU):
        assert not torch.is_autocast_enabled("cpu")
    set_autocast_dtype(torch.bfloat16)
    with autocast(CPU):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")


def test_a_preset_may_pin_fp32():
    from srppo.config.files import parse_overrides

    assert Params.model_validate({"runtime": {"precision": "fp32"}}).runtime.precision == "fp32"
    assert parse_overrides("runtime.precision=fp32") == {"runtime": {"precision": "fp32"}}
    with pytest.raises((ConfigError, ValueError)):
        Params.model_validate({"runtime": {"precision": 16}})


def test_a_frozen_model_keeps_bf16_matmul_weights_and_gives_the_same_log_probs_bit_for_bit(tiny_sft_dir):
    from srppo.models.loading import frozen

    tok = load_tokenizer(tiny_sft_dir)
    batch = _batch(tok)
    set_autocast_dtype(torch.bfloat16)
    live = load_causal_lm(tiny_sft_dir, CPU, torch.float32)  # fp32 weights, cast by autocast at each forward
    stored = frozen(tiny_sft_dir, CPU, torch.float32)
    dtypes = {name: p.dtype for name, p in stored.named_parameters()}
    assert dtypes["model.layers.0.mlp.up_proj.weight"] == torch.bfloat16
    assert dtypes["model.embed_tokens.weight"] == torch.float32  # and the head tied to it
    assert dtypes["model.norm.weight"] == torch.float32
    with torch.no_grad():
        assert torch.equal(token_logprobs(stored, batch), token_logprobs(live, batch))
    set_autocast_dtype(None)
    assert all(p.dtype == torch.float32 for p in frozen(tiny_sft_dir, CPU, torch.float32).parameters())


def test_sft_batches_group_similar_lengths_and_still_see_every_row_once_per_epoch():
    import random

    from srppo.methods.sft import micro_batches

    lengths = [random.Random(k).randint(30, 90) for k in range(96)]
    fill = lambda batches: sum(sum(lengths[i] for i in b) for _, b in batches) / sum(
        max(lengths[i] for i in b) * len(b) for _, b in batches)
    plain = list(micro_batches(96, 8, 2.0, seed=0))
    grouped = list(micro_batches(96, 8, 2.0, seed=0, lengths=lengths))
    assert grouped == list(micro_batches(96, 8, 2.0, seed=0, lengths=lengths))  # the seed fixes the schedule
    for epoch in (0, 1):
        rows = [i for e, b in grouped if e == epoch for i in b]
        assert sorted(rows) == list(range(96))
    assert fill(grouped) > 0.9 > fill(plain)
    assert [len(b) for _, b in grouped] == [len(b) for _, b in plain]


def test_the_eval_answers_in_fp32_under_a_bf16_runtime_unless_asked(tiny_sft_dir, tmp_path):
    """The eval is a measurement: greedy answers under bf16 autocast differ from fp32 ones often enough to move a
    score (docs/results/precision-seeds.md), so by default it answers without autocast, and puts it back after."""
    import json

    from srppo.evaluation.run import evaluate_models

    items = [{"id": f"u{i}", "family": "uppercase", "messages": m, "response": "OK.", "checks": [{"kind": "uppercase"}],
              "group": "core", "report_group": "in_domain", "domain": "in"} for i, m in enumerate(PROMPTS)]
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in items))

    def answers(process_dtype, eval_autocast):
        params = Params.model_validate({"eval": {"models": ["sft"], "max_new_tokens": 12, "autocast": eval_autocast},
                                        "rollouts": {"engine": "hf"}})
        set_autocast_dtype(process_dtype)
        result = evaluate_models(params, path, {"sft": str(tiny_sft_dir)}, CPU, torch.float32)
        assert autocast_dtype() == process_dtype  # the stage's own setting is back
        return result.results["sft"]["answered_in"], [r["response"] for r in result.responses]

    fp32 = answers(None, False)
    assert fp32[0] == "float32"
    assert answers(torch.bfloat16, False) == fp32
    assert answers(torch.bfloat16, True)[0] == "bfloat16"
    assert Params().eval.autocast is False
