"""Both DVC pipelines are generated from one table, and every stage depends on exactly the code it runs.

A stage that misses a file it imports keeps a stale output after that file changes; one that lists a file
it never imports reruns for nothing. The slow tests in test_pipeline.py and test_comparison.py edit every
module under srppo/ in a reproduced repository and check what `dvc repro --dry` would rerun.
"""

import json
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT))

from tools.dvc_pipelines import MAIN, code_deps, comparison_table, local_files  # noqa: E402

CODE = ("srppo/", "stages/")


def declared_code(pipeline: Path) -> dict[str, set[str]]:
    """Stage name -> the project code files it lists as dependencies (paths relative to the root)."""
    prefix = "" if pipeline.parent == ROOT else "../"
    out = {}
    for name, body in yaml.safe_load(pipeline.read_text())["stages"].items():
        body = body.get("do", body)
        deps = {d.removeprefix(prefix) for d in body["deps"]}
        out[name] = {d for d in deps if d.startswith(CODE)}
    return out


def test_both_pipeline_files_are_up_to_date_with_their_table():
    res = subprocess.run([sys.executable, "tools/dvc_pipelines.py", "--check"], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr


def test_each_stage_lists_exactly_the_files_its_script_imports():
    for pipeline, table in ((ROOT / "dvc.yaml", MAIN), (ROOT / "comparison" / "dvc.yaml", comparison_table([]))):
        for name, declared in declared_code(pipeline).items():
            wanted = set(code_deps(ROOT / "stages" / f"{table[name][0]}.py"))
            assert not wanted - declared, f"{pipeline.relative_to(ROOT)}: stage {name} misses {sorted(wanted - declared)}"
            assert not declared - wanted, f"{pipeline.relative_to(ROOT)}: stage {name} lists {sorted(declared - wanted)}"


def test_every_cell_reads_its_own_p_sft_trained_with_its_seed():
    """SFT's seed variance belongs in every interval of the grid's table: p_SFT is a cell's stage, not a setup's.
    The §5 data filter (one seed per setup) reads grid.yaml's filter_seed cell and runs with that seed."""
    stages = yaml.safe_load((ROOT / "comparison" / "dvc.yaml").read_text())["stages"]
    own, first = "data/${item.overlap}-s${item.seed}/sft", "data/${item}-s${filter_seed}/sft"
    sft = stages["sft"]
    assert sft["foreach"] == "${cells}" and own in sft["do"]["outs"]
    assert sft["do"]["cmd"].startswith('cd .. && SRPPO_PARAMS=comparison/params.yaml SRPPO_SET="runtime.seed=${item.seed} '
                                       'runtime.precision=${precision}" exec python stages/sft.py data/base ')
    readers = {name for name, body in stages.items() for dep in body.get("do", body)["deps"]
               if dep.endswith("/sft")}
    assert readers == {"sft_extended", "spin", "reward_model", "diagnose", "srppo_calibrate", "srppo_rollouts", "srppo",
                       "rloo", "srppo_token", "rm_ppo_calibrate", "rm_ppo_rollouts", "rm_ppo", "eval_sft", "filter",
                       "filter_eval"}
    for name in readers:
        body = stages[name].get("do", stages[name])
        wanted = first if name.startswith("filter") else own
        assert [d for d in body["deps"] if d.endswith("/sft")] == [wanted], name
        assert ("runtime.seed=${filter_seed}" if name.startswith("filter") else "runtime.seed=${item.seed}") in body["cmd"]
    assert "runtime.seed=${filter_seed}" in stages["sft_filtered"]["cmd"]  # the subsets: the same seed as that p_SFT
    assert stages["srppo_token"]["foreach"] == "${token_cells}"
    # Table 3's methods in every cell, Tables 1-2's baselines in baseline_cells only
    assert {name for name, body in stages.items() if body.get("foreach") == "${cells}"} == {
        "sft", "diagnose", "srppo_calibrate", "srppo_rollouts", "srppo", "eval_sft", "eval_srppo"}
    assert {name for name, body in stages.items() if body.get("foreach") == "${baseline_cells}"} == {
        "sft_extended", "spin", "reward_model", "rloo", "rm_ppo_calibrate", "rm_ppo_rollouts", "rm_ppo",
        "eval_sft_extended", "eval_spin", "eval_rm_ppo", "eval_rloo"}


def test_every_grid_stage_that_computes_runs_in_the_precision_grid_yaml_names():
    """Cells land over several sessions, on whichever machine runs them: `auto` would pair a bf16 cell with an
    fp32 one. Every stage that reads runtime settings carries grid.yaml's precision in its command, so DVC
    reruns the grid when it changes and a machine without bf16 units stops at the first stage."""
    stages = yaml.safe_load((ROOT / "comparison" / "dvc.yaml").read_text())["stages"]
    grid = yaml.safe_load((ROOT / "comparison" / "grid.yaml").read_text())
    assert grid["precision"] in ("auto", "fp32", "bf16")
    computing = {name for name, body in stages.items()
                 if any(key.split(".")[0] == "runtime" for key in body.get("do", body)["params"][0].get("params.yaml", []))}
    assert {"sft", "srppo", "eval_srppo", "rm_ppo", "spin", "reward_model", "filter", "sft_filtered"} <= computing
    for name in computing:
        assert "runtime.precision=${precision}" in stages[name].get("do", stages[name])["cmd"], name


def test_the_grid_reads_its_own_params_and_evaluates_each_method_with_its_snapshots():
    stages = yaml.safe_load((ROOT / "comparison" / "dvc.yaml").read_text())["stages"]
    grid_params = yaml.safe_load((ROOT / "comparison" / "params.yaml").read_text())
    assert grid_params["ppo"]["snapshots"] and grid_params["rollouts"]["buffer_size"] * grid_params["ppo"]["iterations"] >= 2000
    for name, body in stages.items():
        body = body.get("do", body)
        if "params" in body and name != "table":
            assert "SRPPO_PARAMS=comparison/params.yaml" in body["cmd"], name
            assert all("params.yaml" in entry for entry in body["params"]), name  # comparison/params.yaml
    evals = {name: stages[name]["do"] for name in stages if name.startswith("eval_")}
    assert set(evals) == {"eval_sft", "eval_sft_extended", "eval_spin", "eval_rm_ppo", "eval_srppo", "eval_rloo"}
    srppo = evals["eval_srppo"]["cmd"]
    assert "eval.models=[srppo, srppo@25, srppo@50]" in srppo
    assert "srppo@25=comparison/data/${item.overlap}-s${item.seed}/srppo/model/snapshots/25" in srppo
    assert "eval.models=[sft]" in evals["eval_sft"]["cmd"]
    # RLOO and the token-wise run share SRPPO's reward normaliser and buffers: same reward, same p_SFT
    for name in ("rloo", "srppo_token"):
        assert "data/${item.overlap}-s${item.seed}/srppo/rollouts" in stages[name]["do"]["deps"]


def test_import_analysis_covers_what_python_actually_loads():
    """Independent of the AST walk: importing each stage script loads only files its stage depends on."""
    probe = ("import json, runpy, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; "
             "runpy.run_path(sys.argv[3], run_name='not_main'); "
             "print(json.dumps(sorted(m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None))))")
    for script in sorted((ROOT / "stages").glob("*.py")):
        if script.name == "live_curves.py":
            continue
        out = subprocess.run([sys.executable, "-c", probe, str(script.parent), str(ROOT), str(script)], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        loaded = {str(Path(f).resolve().relative_to(ROOT)) for f in json.loads(out)
                  if Path(f).resolve().is_relative_to(ROOT) and not Path(f).resolve().is_relative_to(ROOT / ".venv")}
        loaded = {f for f in loaded if f.startswith(CODE)}
        assert loaded <= set(code_deps(script)), f"{script.name} loads {sorted(loaded - set(code_deps(script)))}"


def test_local_files_named_in_params_become_dependencies(tmp_path):
    demos = tmp_path / "my-demos.jsonl"
    demos.write_text("{}\n")
    params = {"prepare": {"source": "files", "demos": {"path": str(demos)}, "prompts": {"path": "org/hub-dataset"},
                          "eval_sets": {"gsm8k": {"path": str(demos)}}},
              "runtime": {"deepspeed_config": "configs/deepspeed/zero2.json"}}
    assert local_files(params, ["prepare.demos.path", "prepare.prompts.path", "prepare.eval_sets.*.path"]) == [
        str(demos)]  # a hub id names no local file
    assert local_files(params, ["runtime.deepspeed_config"]) == ["configs/deepspeed/zero2.json"]


def assert_edits_rerun_exactly_their_stages(project: Path, code_root: Path) -> int:
    """In a reproduced DVC `project`, append a line to each module under `code_root`/srppo in turn: `dvc repro
    --dry` must then run exactly the stages that import it (their downstream follows when their outputs change,
    which a dry run cannot know). Returns how many modules were edited."""
    from dvc.repo import Repo

    name = lambda stage: stage.addressing.split(":")[-1]  # noqa: E731
    with Repo(str(project)) as repo:
        deps = {name(s): {d.fs_path for d in s.deps} for s in repo.index.stages}
    modules = sorted((code_root / "srppo").rglob("*.py"))
    for module in modules:
        importers = {stage for stage, paths in deps.items() if str(module) in paths}
        original = module.read_text()
        module.write_text(original + "# a one-line edit\n")
        try:
            with Repo(str(project)) as repo:
                would_run = {name(s) for s in repo.reproduce(dry=True, all_pipelines=True)}
        finally:
            module.write_text(original)
        assert would_run == importers, (f"after editing {module.relative_to(code_root)}, `dvc repro --dry` in "
                                        f"{project.name} runs {sorted(would_run)}; the stages importing it are "
                                        f"{sorted(importers)}")
    return len(modules)
