"""Two clones that share only a DVC remote over a real network protocol (S3 on loopback, moto).

Clone A runs base, prepare and sft; clone B, handed A's lineage record (the hashes the orchestrator
passes between stage jobs), runs the rest. B must pull exactly its stages' inputs from S3 and never
recompute what A produced.
"""

import sys

import pytest
from test_flows_support import AWS, STAGES, clone, lineage, lock, make_repo, moto_s3, prefect_env, run, statuses

pytestmark = pytest.mark.slow


def s3_objects(endpoint: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    if not s3.list_buckets()["Buckets"]:
        s3.create_bucket(Bucket="srppo")
    return [o["Key"] for o in s3.list_objects_v2(Bucket="srppo").get("Contents", [])]


def flow(repo, home, *args) -> dict:
    run([sys.executable, "-m", "flows.pipeline", "--no-record", *args], repo, prefect_env(home, **AWS))
    return lineage(repo)


def test_two_clones_share_outputs_through_s3_without_recomputation(tmp_path, tiny_dir):
    with moto_s3(tmp_path / "moto.log") as endpoint:
        assert s3_objects(endpoint) == []
        origin = make_repo(tmp_path / "origin", tiny_dir)
        run(["dvc", "remote", "add", "-d", "shared", "s3://srppo/dvc"], origin)
        run(["dvc", "remote", "modify", "shared", "endpointurl", endpoint], origin)
        run(["git", "commit", "-qam", "shared S3 remote"], origin)
        a, b = clone(origin, tmp_path / "a"), clone(origin, tmp_path / "b")

        first = flow(a, tmp_path / "prefect-a", "--stages", "base", "prepare", "sft")
        assert statuses(first) == {"base": "ran", "prepare": "ran", "sft": "ran"}
        pushed = s3_objects(endpoint)
        assert pushed, "clone A pushed nothing to the S3 remote"

        rest = STAGES[3:]
        second = flow(b, tmp_path / "prefect-b", "--stages", *rest, "--upstream", str(a / "lineage.json"))
        assert {k: v for k, v in statuses(second).items() if k in rest} == dict.fromkeys(rest, "ran")
        # A's stages were not recomputed in B: their lock entries are A's, and their git-kept outputs were never rewritten.
        lock_a, lock_b = lock(a), lock(b)
        for stage in ("base", "prepare", "sft"):
            assert lock_b[stage]["outs"] == lock_a[stage]["outs"]
            assert second["stages"][stage]["status"] == "not in this run"
        # (the clone holds the committed ones; B rewrote neither)
        assert run(["git", "status", "--porcelain", "metrics/sft.json", "metrics/prepare.json"], b).strip() == ""
        sft_md5 = {o["path"]: o["md5"] for o in lock_a["sft"]["outs"]}["data/sft"]
        assert {d["path"]: d["md5"] for d in lock_b["ppo"]["deps"]}["data/sft"] == sft_md5
        # B pulled exactly its stages' inputs: the demonstrations are sft's input alone, so B never fetched them.
        assert not (b / "data" / "prepared" / "demos.jsonl").exists()
        assert (b / "data" / "prepared" / "calibration.jsonl").exists() and (b / "data" / "sft").is_dir()
        # B's outputs went back through S3 too, and the chain names A's demonstrations and checkpoint.
        assert len(s3_objects(endpoint)) > len(pushed)
        assert second["stale"] == []
        chain = {r["role"]: r["md5"] for r in second["chain"]}
        assert chain["SFT checkpoint"] == sft_md5
        assert chain["demonstration set"] == {d["path"]: d["md5"] for d in lock_a["sft"]["deps"]}[
            "data/prepared/demos.jsonl"]
        assert chain["aligned model"] == {o["path"]: o["md5"] for o in lock_b["ppo"]["outs"]}["data/ppo"]
