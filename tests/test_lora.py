"""LoRA with one shared base (srppo/models/lora.py) on the tiny model: SFT trains an adapter, PPO's four roles
route through one copy of the weights, and training the actor moves the actor alone."""

import pytest
import torch

pytest.importorskip("peft", reason="LoRA needs the lora extra (peft)")

from srppo.config.params import LoRAConfig, SFTConfig  # noqa: E402
from srppo.data.batch import collate  # noqa: E402
from srppo.methods.sft import encode_demos, train_sft  # noqa: E402
from srppo.models.loading import load_causal_lm, load_tokenizer, save_pretrained  # noqa: E402
from srppo.models.logprobs import token_logprobs  # noqa: E402
from srppo.models.lora import ADAPTER_DIR, add_adapter, save_sft, shared_roles  # noqa: E402

CPU, F32 = torch.device("cpu"), torch.float32
MSG = [{"role": "user", "content": "Describe rain in one sentence."}]


@pytest.fixture(scope="module")
def lora_sft(tiny_dir, tmp_path_factory):
    """p_SFT as an adapter on the tiny p_PT, trained a few steps, saved merged + adapter."""
    tok = load_tokenizer(tiny_dir)
    model = add_adapter(load_causal_lm(tiny_dir, CPU, F32, trainable=True), LoRAConfig(r=4, alpha=8))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.2 * sum(p.numel() for p in model.parameters())
    demos = [{"id": f"d{i}", "messages": MSG, "response": "Rain is water falling from clouds."} for i in range(8)]
    train_sft(model, tok, encode_demos(tok, demos, 128), SFTConfig(epochs=2, batch_size=4, lr=1e-2), seed=0)
    out = tmp_path_factory.mktemp("lora") / "sft"
    save_sft(model, tok, out, save_pretrained)
    return out, model, tok


def _batch(tok):
    return collate([[5, 6, 7], [5, 6]], [[8, 9, tok.eos_token_id], [10, tok.eos_token_id]], tok.pad_token_id)


def test_sft_adapter_is_saved_next_to_merged_weights_that_match_it(lora_sft, tiny_dir):
    out, model, tok = lora_sft
    assert (out / ADAPTER_DIR / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    merged = load_causal_lm(out, CPU, F32)
    batch = _batch(tok)
    with torch.no_grad():
        assert torch.allclose(token_logprobs(merged, batch), token_logprobs(model.eval(), batch), atol=1e-5)
        # the adapter learned something: p_SFT differs from p_PT
        base = load_causal_lm(tiny_dir, CPU, F32)
        assert (token_logprobs(merged, batch) - token_logprobs(base, batch)).abs().max() > 1e-3


def test_roles_share_one_base_and_only_the_actor_moves(lora_sft, tiny_dir):
    out, _, tok = lora_sft
    shared, roles = shared_roles(tiny_dir, out, CPU, F32, load_causal_lm)
    batch = _batch(tok)
    lp = lambda role: token_logprobs(roles[role], batch)
    with torch.no_grad():
        sft0, pt0, actor0 = lp("sft"), lp("pt"), lp("actor")
        assert torch.allclose(pt0, token_logprobs(load_causal_lm(tiny_dir, CPU, F32), batch), atol=1e-6)
        assert torch.allclose(sft0, token_logprobs(load_causal_lm(out, CPU, F32), batch), atol=1e-5)
        assert torch.equal(actor0, sft0)  # the actor starts as p_SFT
    base_weights = {n for n, p in shared.model.named_parameters() if "lora_" not in n}
    assert base_weights and not any(p.requires_grad for n, p in shared.model.named_parameters() if n in base_weights)
    actor_params = list(roles["actor"].parameters())
    critic_params = list(roles["critic"].parameters())
    assert actor_params and not {id(p) for p in actor_params} & {id(p) for p in critic_params}

    opt = torch.optim.AdamW(actor_params, lr=1e-2)
    logp = token_logprobs(roles["actor"], batch)
    with torch.no_grad():  # p_SFT and p_PT run between the actor's forward and its backward, as in PPO
        lp("sft"), lp("pt")
    (-(logp * batch.action_mask).sum()).backward()
    assert all(p.grad is not None for p in actor_params)
    opt.step()
    with torch.no_grad():
        assert (lp("actor") - actor0).abs().max() > 1e-4
        assert torch.equal(lp("sft"), sft0) and torch.equal(lp("pt"), pt0)
        values = roles["critic"](batch.input_ids, batch.attention_mask)
    assert values.shape == batch.input_ids.shape and float(values.abs().max()) == 0.0  # head starts at zero

    state = roles["actor"].state_dict()
    assert state and all(".actor." in k for k in state)
    merged = shared.merged("actor")
    with torch.no_grad():
        assert torch.allclose(token_logprobs(merged, batch), lp("actor"), atol=1e-5)
        assert torch.equal(lp("sft"), sft0)  # merging a copy left the shared model as it was


def test_sft_and_ppo_stages_train_adapters_over_one_base(tmp_path, tiny_dir):
    """lora.enabled through the real stage scripts: sft saves an adapter next to merged weights, ppo
    trains the actor's adapter over the shared base and saves the merged actor."""
    import json

    from test_resume import make_repo, run

    from srppo.io import write_json
    from srppo.models.loading import param_fingerprint
    from srppo.scoring.rewards import RewardNormalizer

    # fp32: the engine-vs-trainer check below is exact there (bf16 autocast rounds the two paths apart)
    repo = make_repo(tmp_path, tiny_dir, {"runtime": {"precision": "fp32"}, "lora": {"enabled": True, "r": 4, "alpha": 8},
                                         "sft": {"epochs": 2, "lr": 1e-3, "checkpoint_every": 0},
                                         "ppo": {"iterations": 2, "actor_lr": 1e-3, "checkpoint_every": 0}})
    run(["python", "stages/sft.py", "data/base", "data/prepared/demos.jsonl", "data/sft", "metrics/sft.json",
         "reports/sft.json", "dvclive/sft"], repo)
    assert (repo / "data/sft" / ADAPTER_DIR / "adapter_config.json").exists()
    write_json(repo / "data/calibrate/reward_norm.json", RewardNormalizer().to_dict())
    run(["python", "stages/rollouts.py", "data/base", "data/sft", "data/prepared/ppo_prompts.jsonl",
         "data/rollouts", "metrics/rollouts.json", "reports/rollouts.json"], repo)
    log = run(["python", "stages/ppo.py", "data/base", "data/sft", "data/prepared/ppo_prompts.jsonl",
               "data/calibrate/reward_norm.json", "data/rollouts", "data/ppo", "metrics/ppo.json",
               "reports/ppo.json", "dvclive/ppo"], repo)
    assert "LoRA views on one base" in log
    report = json.loads((repo / "reports/ppo.json").read_text())
    assert report["iterations"] == 2 and report["lora"]["r"] == 4
    assert report["engine_logprob_gap_max"] < 1e-4  # the sampling log-probs are the adapter actor's
    fingerprints = [param_fingerprint(load_causal_lm(repo / d, CPU, F32)) for d in ("data/base", "data/sft", "data/ppo")]
    assert len(set(fingerprints)) == 3  # SFT moved p_PT, PPO moved p_SFT
