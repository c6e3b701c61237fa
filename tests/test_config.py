"""The typed config: defaults, presets, and errors that name the offending key."""

import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from srppo.config.files import (
    ConfigError,
    apply_preset,
    dump_params,
    load_params,
    validate,
)
from srppo.config.params import Params


def test_params_yaml_is_the_documented_default():
    assert load_params(ROOT / "params.yaml") == Params()


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_preset_validates(preset):
    assert isinstance(apply_preset(ROOT / "configs" / preset), Params)


def test_paper_preset_carries_the_paper_hyperparameters():
    p = apply_preset(ROOT / "configs" / "paper-mistral7b.yaml")
    assert (p.ppo.clip_eps, p.ppo.gamma, p.ppo.lam, p.ppo.kl_coef) == (0.2, 1.0, 0.95, 0.2)
    assert (p.rollouts.buffer_size, p.ppo.mini_batch_size, p.ppo.critic_warmup_buffers) == (1024, 128, 35)
    assert p.ppo.critic_lr == 9e-6 and p.ppo.actor_lr == 5e-8 and p.sft.epochs == 2
    assert p.sft.batch_size * p.sft.grad_accum == 128
    assert p.base.name_or_path == "mistralai/Mistral-7B-v0.1" and p.ppo.reward_mode == "sequence"


@pytest.mark.parametrize("raw, key", [
    ({"ppo": {"clip_eps": 2.0}}, "ppo.clip_eps"),
    ({"sft": {"lr": "fast"}}, "sft.lr"),
    ({"sft": {"batch_size": 0}}, "sft.batch_size"),
    ({"rollouts": {"temprature": 0.7}}, "rollouts.temprature"),
    ({"prepare": {"overlap": "maximum"}}, "prepare.overlap"),
])
def test_invalid_values_name_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        validate(raw, "params.yaml")
    assert key in str(err.value) and "params.yaml" in str(err.value)


def test_cross_field_checks_say_what_to_do():
    with pytest.raises(ConfigError, match=r"ppo.mini_batch_size \(3\) must divide rollouts.buffer_size \(16\)"):
        validate({"ppo": {"mini_batch_size": 3}})
    with pytest.raises(ConfigError, match="critic_warmup_buffers"):
        validate({"ppo": {"critic_warmup_buffers": 8}})
    with pytest.raises(ConfigError, match="prepare.demos"):
        validate({"prepare": {"source": "files"}})


def test_token_wise_reward_needs_explicit_acknowledgement():
    with pytest.raises(ConfigError, match="Appendix E"):
        validate({"ppo": {"reward_mode": "token"}})
    assert validate({"ppo": {"reward_mode": "token", "token_reward_ack": True}}).ppo.reward_mode == "token"
    assert Params().ppo.reward_mode == "sequence"


def test_dump_round_trips():
    p = apply_preset(ROOT / "configs" / "smoke.yaml")
    assert validate(yaml.safe_load(dump_params(p))) == p


def test_stage_fails_before_work_on_a_bad_param(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ppo": {"kl_coef": -1}}))
    res = subprocess.run([sys.executable, str(ROOT / "stages" / "prepare.py"), "out", "m.json", "r.json"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 2
    assert "ppo.kl_coef" in res.stderr and "greater than or equal to 0" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("raw, key", [
    ({"sft": {"lr": float("inf")}}, "sft.lr"),
    ({"sft": {"lr": float("nan")}}, "sft.lr"),
    ({"sft": {"lr": 1e39}}, "sft.lr"),
    ({"sft": {"lr": 100}}, "sft.lr"),
    ({"sft": {"epochs": float("inf")}}, "sft.epochs"),
    ({"sft": {"epochs": 1e12}}, "sft.epochs"),
    ({"ppo": {"actor_lr": 10}}, "ppo.actor_lr"),
    ({"ppo": {"kl_coef": float("nan")}}, "ppo.kl_coef"),
    ({"ppo": {"value_clip": -1}}, "ppo.value_clip"),
    ({"spin": {"beta": float("inf")}}, "spin.beta"),
])
def test_non_finite_and_unphysical_numbers_are_refused_by_key(raw, key):
    # YAML's .inf/.nan and absurd magnitudes are caught before any work, naming the key
    with pytest.raises(ConfigError) as err:
        validate(raw, "params.yaml")
    assert key in str(err.value) and "params.yaml" in str(err.value)


@pytest.mark.parametrize("text, says", [
    (None, "not found"),
    ("ppo: [1, 2\n", "not valid YAML"),
    ("- just\n- a list\n", "mapping"),
])
def test_a_bad_preset_file_is_named_not_a_traceback(tmp_path, text, says):
    preset = tmp_path / "preset.yaml"
    if text is not None:
        preset.write_text(text)
    res = subprocess.run([sys.executable, "-m", "srppo.config.presets", str(preset), str(tmp_path / "out.yaml")],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert str(preset) in res.stderr and says in res.stderr
    assert not (tmp_path / "out.yaml").exists()


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "[1, 2]\n"])
def test_check_refuses_an_empty_or_list_shaped_params_file(tmp_path, text):
    params = tmp_path / "params.yaml"
    params.write_text(text)
    res = subprocess.run([sys.executable, "-m", "srppo.config.presets", "--check", str(params)],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "params OK" not in res.stdout and str(params) in res.stderr
