"""The Prefect flow: graph and params handling (fast), and a UI-style triggered run on a real server (slow)."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT
from test_flows_support import (
    AWS,
    STAGES,
    add_s3_remote,
    background,
    clone,
    copy_repo,
    free_port,
    full_clone,
    lineage,
    lock,
    moto_s3,
    prefect_env,
    prefect_server,
    run,
    s3_client,
    statuses,
    tiny_smoke_params,
    wait_until,
)

from flows import lineage as lineage_mod
from flows.dvcgraph import load_graph, pullable_inputs
from flows.params import Overrides, as_dict, resolve
from srppo.config.files import ConfigError


def test_graph_order_and_exact_inputs_come_from_dvc_yaml():
    graph = load_graph(ROOT)
    assert list(graph) == STAGES
    assert pullable_inputs(graph, "sft") == ["data/base", "data/prepared/demos.jsonl"]
    assert graph["ppo"].inputs["data/rollouts"] == "rollouts"
    assert "metrics/eval.json" in graph["eval"].uncached


def test_run_form_rejects_typos_and_invalid_values_naming_the_key():
    with pytest.raises(ValueError, match="kl_cof"):
        Overrides.model_validate({"ppo": {"kl_cof": 0.5}})
    params = resolve(ROOT, "smoke", as_dict({"ppo": {"kl_coef": 0.5}}))
    assert (params.ppo.kl_coef, params.ppo.iterations) == (0.5, 2)
    with pytest.raises(ConfigError, match=r"ppo.clip_eps: Input should be less than 1"):
        resolve(ROOT, "smoke", {"ppo": {"clip_eps": 2.0}})
    with pytest.raises(ValueError, match="unknown preset 'smok'"):
        resolve(ROOT, "smok", {})


def test_trace_answers_which_demonstrations_and_checkpoint_made_the_model():
    record = {"stages": {
        "prepare": {"outs": {"data/prepared": "p.dir"}, "deps": {}, "inputs_from": {}, "params": {}},
        "sft": {"outs": {"data/sft": "s.dir"}, "deps": {"data/prepared/demos.jsonl": "d"},
                "inputs_from": {"data/prepared/demos.jsonl": "prepare"}, "params": {}},
        "ppo": {"outs": {"data/ppo": "m.dir"}, "deps": {"data/sft": "s.dir"}, "inputs_from": {"data/sft": "sft"},
                "params": {}},
    }}
    lines = lineage_mod.trace(record, "data/ppo")
    assert lines[0].startswith("data/ppo  md5 m.dir")
    assert lines[1].strip().startswith("data/sft  md5 s.dir  ← stage sft")
    assert lines[2].strip().startswith("data/prepared/demos.jsonl  md5 d  ← stage prepare")
    # After a partial run the producer may hold a newer version than the one consumed: say so, stop there.
    record["stages"]["ppo"]["deps"]["data/sft"] = "old.dir"
    assert lineage_mod.trace(record, "data/ppo")[2].strip() == "(stage sft has since produced md5 s.dir)"
    assert lineage_mod._stale(record["stages"]) == [
        {"stage": "ppo", "input": "data/sft", "consumed": "old.dir", "current": "s.dir"}]


def _flow_cli(repo, home, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.pipeline", *args], cwd=repo, capture_output=True, text=True,
                          env={**prefect_env(home), **(env or {})}, timeout=300)


def test_preconditions_refuse_a_run_before_any_stage(tmp_path):
    """No git identity, an unreachable remote, a null on the command line: each stops the run in seconds,
    with its cause named, before any stage and before params.yaml is touched."""
    repo = full_clone(tmp_path / "repo")
    params = (repo / "params.yaml").read_text()
    no_identity = {"GIT_CONFIG_GLOBAL": str(tmp_path / "no-gitconfig"), "GIT_CONFIG_NOSYSTEM": "1"}
    run(["git", "config", "--unset", "user.name"], repo)
    res = _flow_cli(repo, tmp_path / "prefect", "--preset", "smoke", env=no_identity)
    assert res.returncode != 0 and "git user.name not configured" in res.stdout + res.stderr
    assert "--no-record" in res.stdout + res.stderr

    add_s3_remote(repo, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    res = _flow_cli(repo, tmp_path / "prefect", "--preset", "smoke", "--no-record", env={**AWS, **no_identity})
    assert res.returncode != 0 and "DVC remote 'shared' is not reachable" in res.stdout + res.stderr

    res = _flow_cli(repo, tmp_path / "prefect", "--set", "base.gguf_file=null")
    assert res.returncode == 2 and "base.gguf_file=null: a null override means" in res.stderr
    assert (repo / "params.yaml").read_text() == params and not (repo / "lineage.json").exists()
    assert not (repo / "data").exists()


@pytest.mark.slow
def test_the_flow_stops_on_a_corrupt_cache_object_before_a_stage_uses_it(reproduced_smoke, tmp_path):
    """A disk fault in p_SFT's weights inside the DVC cache: DVC would check the object out as it is and the next
    stage would train on it. The flow hashes each stage's cached inputs first and names the bad object."""
    from flows.dvcgraph import read_lock

    repo = copy_repo(reproduced_smoke[0], tmp_path / "repo")
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    oid = {o["path"]: o["md5"] for o in read_lock(repo)["sft"]["outs"]}["data/sft"]
    manifest = json.loads((cache / oid[:2] / oid[2:]).read_bytes())
    weights = next(f["md5"] for f in manifest if f["relpath"] == "model.safetensors")
    obj = cache / weights[:2] / weights[2:]
    obj.chmod(0o644)  # DVC keeps its objects read-only
    data = bytearray(obj.read_bytes())
    data[-1] ^= 0xFF
    obj.write_bytes(bytes(data))
    res = _flow_cli(repo, tmp_path / "prefect", "--stages", "calibrate", "--no-record")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert f"data/sft/model.safetensors: its cache object {obj} does not hash to its name" in out, out[-3000:]
    assert "python -m tools.storecheck" in out and "Running stage" not in out
    # without the check (--no-verify-cache) the run goes on: what the flow did before
    res = _flow_cli(repo, tmp_path / "prefect", "--stages", "calibrate", "--no-record", "--no-verify-cache")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]


def test_empty_form_fields_are_not_set():
    # What the UI sends for a section opened with one field typed in, and for sections left closed.
    over = as_dict({"runtime": None, "ppo": {"kl_coef": 0.5, "clip_eps": None}, "base": {"gguf_file": None}})
    assert over == {"ppo": {"kl_coef": 0.5}}
    assert as_dict(None) == {} and as_dict({"ppo": None}) == {}


def ui_form_parameters(schema: dict, preset: str, filled: dict) -> dict:
    """The parameters the UI's custom-run form sends when only `filled` is typed in (as test_ui_browser.py
    sees both UIs send them): every section open, null for every field left empty, the other parameters at
    their form defaults."""
    defs = schema["definitions"]

    def form(prop: dict, typed: dict) -> dict:  # a section shows open, each of its fields nested alike
        fields = defs[prop["$ref"].split("/")[-1]]["properties"]
        return {k: form(f, typed.get(k, {})) if "$ref" in f else typed.get(k) for k, f in fields.items()}

    return {"stages": None, "upstream": None, "remote": None, "record": True, "verify_cache": True, "repo": ".",
            "preset": preset, "overrides": form(schema["properties"]["overrides"], filled)}


def _wait_final(client, flow_run_id, timeout: float = 300):
    return wait_until(lambda: (fr := client.read_flow_run(flow_run_id)).state.is_final() and fr, timeout,
                      f"flow run {flow_run_id}", every=1)


def _artifacts(client, flow_run_id) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
        any_=[flow_run_id])), sort="CREATED_DESC")


def _task_runs(client, flow_run_id) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return {t.name: t for t in client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))}


@pytest.mark.slow
def test_user_moves_ui_run_rerun_what_changed_and_a_second_clone(tmp_path, tiny_dir, reproduced_smoke, monkeypatch):
    """What a user does, on a full clone: a run from the UI's form (nulls included) against a real Prefect
    server and a real S3 remote on 127.0.0.1, a bad value, then a second clone that pulls and is up to date."""
    # This process talks to the server too: its Prefect settings must not come from the user's home.
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "client-home"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # The baseline, reproduced by hand (`dvc repro`) on a full clone: the flow must adopt it, not redo it.
    repo = copy_repo(reproduced_smoke[0], tmp_path / "repo")
    preset = tmp_path / "tiny-smoke.yaml"  # what the user would pick in the form: smoke on the tiny model
    preset.write_text(yaml.safe_dump(tiny_smoke_params(tiny_dir)))
    home = tmp_path / "prefect"
    with moto_s3(tmp_path / "moto.log") as endpoint, prefect_server(home, tmp_path / "server.log") as (api, ready):
        s3_client(endpoint).create_bucket(Bucket="srppo")
        add_s3_remote(repo, endpoint)  # as docs/orchestration.md says: --local, made the default
        before = lock(repo)
        ready()
        env = prefect_env(home, api, PREFECT_WORKER_QUERY_SECONDS="1", **AWS)
        run([sys.executable, "-m", "flows.deploy", "local", "--repo", str(repo)], repo, env)
        worker = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "srppo-local", "--type", "process"]
        with background(worker, env, repo, tmp_path / "worker.log"), \
                temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("srppo-pipeline/local")
            schema = deployment.parameter_openapi_schema
            # A value out of its bound is refused when the run is created, naming the key and the bound.
            with pytest.raises(PrefectHTTPStatusError) as refused:
                client.create_flow_run_from_deployment(deployment.id, parameters=ui_form_parameters(
                    schema, str(preset), {"ppo": {"clip_eps": 2.0}}))
            assert "clip_eps" in str(refused.value) and "maximum of 1" in str(refused.value)
            # A value only the whole params can refuse fails the run before any stage, naming the key.
            bad = client.create_flow_run_from_deployment(deployment.id, parameters=ui_form_parameters(
                schema, str(preset), {"runtime": {"num_processes": 2}}))
            final = _wait_final(client, bad.id)
            assert final.state.is_failed()
            assert not [t for t in _task_runs(client, bad.id) if t.startswith("stage-")]
            assert lock(repo) == before

            # The UI-shaped run with one override: only the stages it affects compute.
            flow_run = client.create_flow_run_from_deployment(deployment.id, parameters=ui_form_parameters(
                schema, str(preset), {"ppo": {"kl_coef": 0.5}}))
            final = _wait_final(client, flow_run.id)
            assert final.state.is_completed(), f"{final.name}: {final.state}"
            record = lineage(repo)
            assert statuses(record) == {**dict.fromkeys(STAGES, "skipped"), "ppo": "ran", "eval": "ran"}
            assert record["stale"] == [] and record["run"]["overrides"] == {"ppo": {"kl_coef": 0.5}}
            after = lock(repo)
            assert after["sft"] == before["sft"] and after["ppo"]["outs"] != before["ppo"]["outs"]

            # The run page: ran and skipped stages are told apart, and it holds two artifacts, newest first.
            tasks = _task_runs(client, flow_run.id)
            assert {t: tasks[f"stage-{t}"].state.name for t in STAGES} == {
                **dict.fromkeys(STAGES, "Skipped"), "ppo": "Completed", "eval": "Completed"}
            assert {t.name for t in tasks.values() if "gpu" in t.tags} == {f"stage-{s}" for s in STAGES}
            assert client.read_global_concurrency_limit_by_name("gpu").active_slots == 0
            artifacts = _artifacts(client, flow_run.id)
            assert sorted(a.key for a in artifacts) == sorted([lineage_mod.TABLE_KEY, lineage_mod.GRAPH_KEY])
            rows = json.loads(next(a for a in artifacts if a.key == lineage_mod.TABLE_KEY).data)
            outs = {o["path"]: o["md5"] for o in after["ppo"]["outs"]}
            assert ("ppo", "data/ppo", outs["data/ppo"], "ran") in {(r["stage"], r["path"], r["md5"], r["status"])
                                                                    for r in rows}

        # The run is recorded as a DVC experiment of the full clone, with the override in its params.
        rev = record["run"]["experiment_rev"]
        assert "kl_coef: 0.5" in run(["git", "show", f"{rev}:params.yaml"], repo)

        # A second clone: the user keeps the result, a colleague clones, points at the remote and pulls.
        run(["dvc", "exp", "apply", record["run"]["experiment"]], repo)
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-qm", "kl_coef 0.5"], repo)
        second = clone(repo, tmp_path / "second")
        add_s3_remote(second, endpoint)
        assert "Everything is up to date" not in run(["dvc", "pull"], second, {**os.environ, **AWS})
        status = subprocess.run(["dvc", "status"], cwd=second, capture_output=True, text=True)
        assert status.returncode == 0 and "Data and pipelines are up to date" in status.stdout, status.stdout
        assert (second / "data" / "ppo" / "model.safetensors").exists()
