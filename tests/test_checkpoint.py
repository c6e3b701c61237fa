"""srppo.runtime.checkpoint in-process: RNG round trip, fingerprints, and an interrupted SFT loop that resumes exactly."""

import random

import numpy as np
import pytest
import torch

from srppo.config.params import Params, SFTConfig
from srppo.methods.sft import encode_demos, train_sft
from srppo.models.loading import load_causal_lm, load_tokenizer
from srppo.runtime.checkpoint import Checkpointer, fingerprint, stage_checkpointer

CPU = torch.device("cpu")


def draws():
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_restore_rewinds_every_rng_and_weights(tmp_path):
    model, opt = torch.nn.Linear(2, 2), None
    opt = torch.optim.AdamW(model.parameters())
    ckpt = Checkpointer(tmp_path, "fp", every=1, log=lambda m: None)
    ckpt.save(1, {"m": model}, {"o": opt}, {"pos": 7})
    want = draws()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert ckpt.restore({"m": model}, {"o": opt}) == {"pos": 7}
    assert draws() == want
    assert Checkpointer(tmp_path, "other", every=1, log=lambda m: None).restore({"m": model}, {"o": opt}) is None
    (tmp_path / "latest" / "m.safetensors").write_bytes(b"\0" * 8)  # a damaged disk, not a kill: saves are atomic
    with pytest.raises(RuntimeError, match=rf"{tmp_path / 'latest'}: unreadable checkpoint .* delete {tmp_path}"):
        ckpt.restore({"m": model}, {"o": opt})


def test_fingerprint_follows_params_and_input_bytes_not_checkpoint_every(tmp_path):
    f = tmp_path / "demos.jsonl"
    f.write_text("a")
    fp = lambda p: stage_checkpointer(tmp_path / "sft", p, ["runtime", "sft"], [f], 1, print).fp
    base = fp(Params())
    assert fp(Params(sft={"checkpoint_every": 3})) == base
    assert fp(Params(sft={"checkpoint_min_seconds": 0})) == base
    # the nodes of one multi-node run differ in node_rank, and a restart may meet at another host
    assert fp(Params(runtime={"node_rank": 1, "nnodes": 2, "num_processes": 2, "rendezvous": "h:29500",
                              "deepspeed_config": "configs/deepspeed/zero2.json"})) == fp(Params(
        runtime={"nnodes": 2, "num_processes": 2, "rendezvous": "other:1234", "deepspeed_config": "configs/deepspeed/zero2.json"}))
    assert fp(Params(sft={"lr": 1e-3})) != base
    f.write_text("b")
    assert fp(Params()) != base
    assert fingerprint({}, [tmp_path]) != fingerprint({}, [])  # directories hash their files


def test_a_due_checkpoint_waits_for_min_seconds_after_the_last_save(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("srppo.runtime.checkpoint.time.monotonic", lambda: clock[0])
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    ckpt = Checkpointer(tmp_path, "fp", every=2, log=lambda m: None, min_seconds=60)
    saved = lambda: (tmp_path / "latest" / "meta.json").exists() and Checkpointer(
        tmp_path, "fp", every=2, log=lambda m: None).restore({"m": model}, {"o": opt})["step"]
    clock[0] = 130.0  # 30 s after the start: step 2 is due on the grid, but too soon
    ckpt.maybe_save(2, {"m": model}, {"o": opt}, lambda: {"step": 2})
    assert not (tmp_path / "latest").exists()
    clock[0] = 161.0
    ckpt.maybe_save(3, {"m": model}, {"o": opt}, lambda: {"step": 3})  # off the grid: never
    assert not (tmp_path / "latest").exists()
    ckpt.maybe_save(4, {"m": model}, {"o": opt}, lambda: {"step": 4})
    assert saved() == 4
    clock[0] = 200.0  # 39 s after that save
    ckpt.maybe_save(6, {"m": model}, {"o": opt}, lambda: {"step": 6})
    assert saved() == 4
    clock[0] = 221.0
    ckpt.maybe_save(8, {"m": model}, {"o": opt}, lambda: {"step": 8})
    assert saved() == 8


class Kill(Exception):
    pass


def test_interrupted_sft_resumes_bitwise(tmp_path, tiny_dir):
    tok = load_tokenizer(tiny_dir)
    demos = [{"id": f"d{i}", "messages": [{"role": "user", "content": f"Say {i}."}], "response": f"{i} it is."}
             for i in range(6)]
    encoded, cfg = encode_demos(tok, demos, 64), SFTConfig(epochs=2, batch_size=2, lr=1e-3)

    def train(ckpt=None, on_step=None):
        torch.manual_seed(0)
        model = load_causal_lm(tiny_dir, CPU, torch.float32, trainable=True)
        return train_sft(model, tok, encoded, cfg, seed=0, on_step=on_step, ckpt=ckpt), model

    want, model_a = train()
    ckpt = Checkpointer(tmp_path, "fp", every=2, log=lambda m: None)

    def die_at_3(row):
        if row["step"] == 3:
            raise Kill
    with pytest.raises(Kill):
        train(ckpt, die_at_3)
    seen = []
    got, model_b = train(ckpt, seen.append)  # resumes from step 2
    assert got == want
    assert seen == want  # on_step saw the restored steps too, in order: the stage's live curves are whole
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))
