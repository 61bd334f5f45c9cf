"""The course workflow's security properties, read from the YAML itself, and zizmor's audit of it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grader.commands.ci import POLICY_OUTPUTS

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
GRADE = WORKFLOWS / "grade.yml"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
PR_HEAD = "github.event.pull_request.head"


def load(path: Path = GRADE) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def checkouts(job: dict) -> list[dict]:
    return [s for s in steps(job) if s.get("uses", "").startswith("actions/checkout@")]


def writes(job: dict) -> bool:
    return any(level == "write" for level in (job.get("permissions") or {}).values())


@pytest.fixture(scope="module")
def workflow() -> dict:
    return load()


def test_only_the_base_branch_definition_runs(workflow) -> None:
    assert set(workflow["on"]) == {"pull_request_target"}
    assert workflow["permissions"] == {}
    assert "pull_request.number" in workflow["concurrency"]["group"]
    assert sorted(p.name for p in WORKFLOWS.iterdir()) == ["grade.yml"]


def test_each_job_has_only_the_permissions_it_needs(workflow) -> None:
    jobs = workflow["jobs"]
    assert jobs["policy"]["permissions"] == {"contents": "read", "pull-requests": "read"}
    assert jobs["grade"]["permissions"] == {"contents": "read"}
    assert jobs["publish"]["permissions"] == {"contents": "read", "pull-requests": "write", "statuses": "write"}
    assert [name for name, job in jobs.items() if writes(job)] == ["publish"]


def test_no_job_that_can_write_touches_pr_code(workflow) -> None:
    for name, job in workflow["jobs"].items():
        text = json.dumps(job)
        if writes(job):
            assert PR_HEAD not in text, name
            assert all(set(c.get("with", {})) <= {"persist-credentials", "path"} for c in checkouts(job)), name
            assert not str(job["runs-on"]).startswith("[") and "self-hosted" not in str(job["runs-on"]), name


def test_the_grading_job_checks_out_only_the_approved_folder_as_data(workflow) -> None:
    grade = workflow["jobs"]["grade"]
    assert grade["needs"] == "policy" and "needs.policy.outputs.decision == 'grade'" in grade["if"]
    assert "self-hosted" in grade["runs-on"] and "gpu" in grade["runs-on"]
    assert grade["environment"] == "${{ needs.policy.outputs.environment }}"
    base, pr = checkouts(grade)
    assert base["with"] == {"path": "base", "persist-credentials": False}
    assert pr["with"]["ref"] == "${{ github.event.pull_request.head.sha }}"
    assert pr["with"]["path"] == "pr" and pr["with"]["sparse-checkout-cone-mode"] is False
    assert pr["with"]["sparse-checkout"] == "/${{ needs.policy.outputs.folder }}/"
    assert "github.token" not in json.dumps(grade) and "secrets." not in json.dumps(grade)


def test_the_grader_runs_the_models_in_the_pinned_container(workflow) -> None:
    grade = workflow["jobs"]["grade"]
    assert re.fullmatch(r"[\w./-]+@sha256:[0-9a-f]{64}", grade["env"]["GRADER_IMAGE"])
    [step] = [s for s in steps(grade) if "grader check" in s.get("run", "")]
    assert '--runner docker --image "$GRADER_IMAGE"' in step["run"] and "--context" in step["run"]
    assert "GITHUB_TOKEN" not in json.dumps(step)


def test_every_checkout_drops_credentials_and_every_action_is_pinned(workflow) -> None:
    for name, job in workflow["jobs"].items():
        for step in steps(job):
            uses = step.get("uses")
            if uses:
                assert uses.startswith("./") or PINNED.match(uses), f"{name}: {uses} is not pinned to a commit"
        for checkout in checkouts(job):
            assert checkout["with"]["persist-credentials"] is False, name


def test_no_expression_is_pasted_into_a_shell_script(workflow) -> None:
    for name, job in workflow["jobs"].items():
        for step in steps(job):
            assert "${{" not in step.get("run", ""), f"{name}: pass values through env, not into the script"


def test_the_token_reaches_only_the_grader_ci_steps(workflow) -> None:
    for name, job in workflow["jobs"].items():
        for step in steps(job):
            if "github.token" in json.dumps(step):
                assert set(step["env"]) >= {"GITHUB_TOKEN"} and re.search(r"grader\"? ci (policy|publish)", step["run"])
                assert name in ("policy", "publish")


def test_publish_reads_the_artifact_outside_the_workspace_and_always_reports(workflow) -> None:
    publish = workflow["jobs"]["publish"]
    assert publish["needs"] == ["policy", "grade"] and publish["if"] == "${{ !cancelled() }}"
    [download] = [s for s in steps(publish) if s.get("uses", "").startswith("actions/download-artifact@")]
    assert download["with"]["path"].startswith("${{ runner.temp }}")
    runs = [s["run"] for s in steps(publish) if "run" in s]
    assert any("grader\" ci publish" in r and "$RUNNER_TEMP/incoming/result.json" in r for r in runs)


def test_later_jobs_read_only_outputs_the_policy_step_writes(workflow) -> None:
    declared = workflow["jobs"]["policy"]["outputs"]
    assert all(value == f"${{{{ steps.policy.outputs.{key} }}}}" and key in POLICY_OUTPUTS
               for key, value in declared.items())
    used = set(re.findall(r"needs\.policy\.outputs\.(\w+)", GRADE.read_text()))
    assert used and used <= set(declared)


def test_every_zizmor_ignore_is_explained() -> None:
    lines = GRADE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "zizmor: ignore[" in line:
            reason = line.split("]", 1)[1].strip() or lines[number - 1].strip()
            assert len(reason) > 20 and (reason.startswith("#") or line.strip().startswith("#")), line


def zizmor() -> str | None:
    local = Path(sys.executable).with_name("zizmor")
    return str(local) if local.exists() else shutil.which("zizmor")


@pytest.mark.skipif(zizmor() is None, reason="zizmor is not installed (pip install -e '.[dev]')")
def test_zizmor_finds_nothing_unexplained() -> None:
    done = subprocess.run([zizmor(), "--offline", "--persona", "auditor", "--min-severity", "medium",
                           "--format", "json", str(WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stdout + done.stderr
    unexplained = subprocess.run([zizmor(), "--offline", "--persona", "auditor", "--no-ignores", "--format", "json",
                                  str(WORKFLOWS)], capture_output=True, text=True, timeout=120)
    found = {f["ident"] for f in json.loads(unexplained.stdout)}
    assert found == {"dangerous-triggers", "self-hosted-runner"}, found  # the two explained in the YAML
