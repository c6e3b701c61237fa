"""The Prefect flow: graph and params handling (fast), and a UI-style triggered run on a real server (slow)."""

import json
import sys

import pytest
from conftest import ROOT
from test_flows_support import (STAGES, background, copy_repo, lineage, lock, prefect_env, prefect_server, run,
                                statuses, tiny_overrides, wait_until)

from flows import lineage as lineage_mod
from flows.dvcgraph import load_graph, pullable_inputs
from flows.params import Overrides, as_dict, resolve
from srppo.config import ConfigError, deep_merge


def test_graph_order_and_exact_inputs_come_from_dvc_yaml():
    graph = load_graph(ROOT)
    assert list(graph) == STAGES
    assert pullable_inputs(graph, "sft") == ["data/base", "data/prepared/demos.jsonl"]
    assert graph["ppo"].inputs["data/rollouts"] == "rollouts"
    assert "metrics/eval.json" in graph["eval"].uncached


def test_run_form_rejects_typos_and_invalid_values_naming_the_key():
    with pytest.raises(ValueError, match="kl_cof"):
        Overrides.model_validate({"ppo": {"kl_cof": 0.5}})
    over = as_dict({"ppo": {"kl_coef": 0.5}, "base": {"gguf_package": None, "gguf_file": None}})
    assert over == {"ppo": {"kl_coef": 0.5}, "base": {"gguf_package": None, "gguf_file": None}}
    params = resolve(ROOT, "smoke", over)
    assert (params.ppo.kl_coef, params.ppo.iterations, params.base.gguf_file) == (0.5, 2, None)
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


def _run_deployment(client, deployment_id, parameters: dict, timeout: float = 300):
    """What the UI's Run button does: create a flow run from the deployment with the form's parameters."""
    flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
    final = wait_until(lambda: (fr := client.read_flow_run(flow_run.id)).state.is_final() and fr, timeout,
                       f"flow run {flow_run.name}", every=1)
    assert final.state.is_completed(), f"{final.name}: {final.state}"
    return final


def _artifact(client, flow_run_id, key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    found = client.read_artifacts(artifact_filter=ArtifactFilter(
        key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
        sort="CREATED_DESC", limit=1)
    assert found, f"no artifact {key} for run {flow_run_id}"
    return found[0]


@pytest.mark.slow
def test_ui_triggered_run_with_override_reruns_only_affected_stages(tmp_path, tiny_dir, reproduced_smoke, monkeypatch):
    # This process talks to the server too: its Prefect settings must not come from the user's home.
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "client-home"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # The baseline, reproduced by hand (`dvc repro`) before the server starts: the flow must adopt it, not redo it.
    repo = copy_repo(reproduced_smoke[0], tmp_path / "repo")
    run(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], repo)  # the default: a local directory
    home = tmp_path / "prefect"
    with prefect_server(home, tmp_path / "server.log") as (api, server_ready):
        before = lock(repo)
        server_ready()
        env = prefect_env(home, api, PREFECT_WORKER_QUERY_SECONDS="1")
        run([sys.executable, "-m", "flows.deploy", "local", "--repo", str(repo)], repo, env)
        worker = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "srppo-local", "--type", "process"]
        with background(worker, env, repo, tmp_path / "worker.log"), \
                temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("srppo-pipeline/local")
            assert {"preset", "overrides"} <= set(deployment.parameter_openapi_schema["properties"])
            # The form's schema comes from srppo.config: the API refuses what the UI would, naming the key.
            with pytest.raises(PrefectHTTPStatusError, match=r"overrides\.ppo\.clip_eps"):
                client.create_flow_run_from_deployment(deployment.id, parameters={
                    "overrides": {"ppo": {"clip_eps": 2.0}}})
            over = deep_merge(tiny_overrides(tiny_dir), {"ppo": {"kl_coef": 0.5}})
            flow_run = _run_deployment(client, deployment.id, {"preset": "smoke", "overrides": over})
            record = lineage(repo)
            assert statuses(record) == {**dict.fromkeys(STAGES, "skipped"), "ppo": "ran", "eval": "ran"}
            assert record["stale"] == []

            after = lock(repo)
            outs = {s: {o["path"]: o["md5"] for o in after[s]["outs"]} for s in after}
            assert after["sft"] == before["sft"] and after["ppo"]["outs"] != before["ppo"]["outs"]
            rows = json.loads(_artifact(client, flow_run.id, lineage_mod.TABLE_KEY).data)
            assert {r["stage"]: r["status"] for r in rows} == statuses(record)
            assert {(r["stage"], r["path"], r["md5"]) for r in rows} >= {
                ("sft", "data/sft", outs["sft"]["data/sft"]), ("ppo", "data/ppo", outs["ppo"]["data/ppo"])}
            graph_md = _artifact(client, flow_run.id, lineage_mod.GRAPH_KEY).data
            demos = {d["path"]: d["md5"] for d in after["sft"]["deps"]}["data/prepared/demos.jsonl"]
            for md5 in (demos, outs["sft"]["data/sft"], outs["ppo"]["data/ppo"]):
                assert md5 in graph_md

            # Stage tasks (and only they) carry the gpu tag; their slots of the gpu limit were given back.
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
            assert {t.name for t in task_runs if "gpu" in t.tags} == {f"stage-{s}" for s in STAGES}
            assert client.read_global_concurrency_limit_by_name("gpu").active_slots == 0
        # The run's params are recorded as a DVC experiment: the override is in its params.yaml.
        rev = record["run"]["experiment_rev"]
        assert "kl_coef: 0.5" in run(["git", "show", f"{rev}:params.yaml"], repo)
        assert json.loads(run(["git", "show", f"{rev}:lineage.json"], repo))["run"]["overrides"]["ppo"] == {
            "kl_coef": 0.5}
