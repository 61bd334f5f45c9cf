"""The course workflows' security properties, read from the YAML itself, and zizmor's audit of them.

grade.yml (pull_request_target) grades students' pull requests; regrade.yml (workflow_dispatch,
staff only) regrades stored submissions on the runner pool. Each regrade.yml property is a
``check_*`` function, and ``test_each_regrade_check_fails_on_a_broken_copy`` breaks the file in
one way per check to show that the check notices.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grader.commands.ci import POLICY_OUTPUTS, REGRADE_PLAN_OUTPUTS

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
GRADE = WORKFLOWS / "grade.yml"
REGRADE = WORKFLOWS / "regrade.yml"
RUNNER_CACHE = WORKFLOWS / "runner-cache.yml"
ALL = [GRADE, REGRADE, RUNNER_CACHE]
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
    """Pull requests reach only grade.yml, whose base-branch copy runs; every other workflow is
    started by staff only (workflow_dispatch needs write access), never by a PR's event."""
    assert set(workflow["on"]) == {"pull_request_target"}
    assert workflow["permissions"] == {}
    assert "pull_request.number" in workflow["concurrency"]["group"]
    assert sorted(p.name for p in WORKFLOWS.iterdir()) == ["grade.yml", "regrade.yml", "runner-cache.yml"]
    assert set(load(REGRADE)["on"]) == {"workflow_dispatch"}
    cache = load(RUNNER_CACHE)["on"]
    assert set(cache) == {"push", "workflow_dispatch"} and cache["push"]["branches"] == ["main"]


def test_each_job_has_only_the_permissions_it_needs(workflow) -> None:
    jobs = workflow["jobs"]
    assert jobs["policy"]["permissions"] == {"contents": "read", "pull-requests": "read", "actions": "read"}
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
    # the course repository's copy of the PR head: the job token cannot read a private fork
    assert pr["with"]["repository"] == "${{ github.repository }}"
    assert pr["with"]["path"] == "pr" and pr["with"]["sparse-checkout-cone-mode"] is False
    assert pr["with"]["sparse-checkout"] == "/${{ needs.policy.outputs.folder }}/"
    assert "github.token" not in json.dumps(grade) and "secrets." not in json.dumps(grade)


def test_the_grader_runs_the_models_in_the_pinned_container(workflow) -> None:
    grade = workflow["jobs"]["grade"]
    assert re.fullmatch(r"[\w./-]+@sha256:[0-9a-f]{64}", grade["env"]["GRADER_IMAGE"])
    [step] = [s for s in steps(grade) if "grader check" in s.get("run", "")]
    assert '--runner docker --image "$GRADER_IMAGE"' in step["run"] and "--context" in step["run"]
    assert "GITHUB_TOKEN" not in json.dumps(step)


def check_pinned_and_no_credentials(doc: dict) -> None:
    for name, job in doc["jobs"].items():
        for step in steps(job):
            uses = step.get("uses")
            if uses:
                assert uses.startswith("./") or PINNED.match(uses), f"{name}: {uses} is not pinned to a commit"
        for checkout in checkouts(job):
            assert checkout["with"]["persist-credentials"] is False, name


def check_no_expression_in_scripts(doc: dict) -> None:
    for name, job in doc["jobs"].items():
        for step in steps(job):
            assert "${{" not in step.get("run", ""), f"{name}: pass values through env, not into the script"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_checkout_drops_credentials_and_every_action_is_pinned(path: Path) -> None:
    check_pinned_and_no_credentials(load(path))


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_no_expression_is_pasted_into_a_shell_script(path: Path) -> None:
    check_no_expression_in_scripts(load(path))


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
    assert any('grader" ci publish' in r and "$RUNNER_TEMP/incoming/result.json" in r for r in runs)


def test_each_grading_uploads_its_result_under_its_team_and_assignment(workflow) -> None:
    """The publish job downloads exactly what the grade job uploaded, and the policy job counts a
    team's runs by that same name (grader.ci.collect.artifact_name)."""
    from grader.ci.collect import artifact_name

    [upload] = [s for s in steps(workflow["jobs"]["grade"]) if s.get("uses", "").startswith("actions/upload-artifact@")]
    [download] = [
        s for s in steps(workflow["jobs"]["publish"]) if s.get("uses", "").startswith("actions/download-artifact@")
    ]
    name = upload["with"]["name"]
    assert download["with"]["name"] == name
    filled = name.replace("${{ needs.policy.outputs.team }}", "team-x").replace(
        "${{ needs.policy.outputs.assignment }}", "hw-y"
    )
    assert filled == artifact_name("team-x", "hw-y")


def uploads(doc: dict) -> list[dict]:
    return [
        s
        for job in doc["jobs"].values()
        for s in steps(job)
        if s.get("uses", "").startswith("actions/upload-artifact@")
    ]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_a_re_run_attempt_replaces_its_uploads(path: Path) -> None:
    """upload-artifact v4 answers 409 for a name that already exists in the run, which is what a
    re-run attempt meets; overwrite replaces the earlier attempt's artifact."""
    found = uploads(load(path))
    assert found or path == RUNNER_CACHE
    assert all(u["with"].get("overwrite") is True for u in found)


def test_publish_takes_only_the_result_of_the_attempt_that_last_graded(workflow) -> None:
    grade, publish = workflow["jobs"]["grade"], workflow["jobs"]["publish"]
    assert grade["outputs"]["attempt"] == "${{ steps.attempt.outputs.attempt }}"
    [recorder] = [s for s in steps(grade) if s.get("id") == "attempt"]
    assert steps(grade).index(recorder) == 0  # set before anything can fail
    assert recorder["run"] == 'echo "attempt=$GITHUB_RUN_ATTEMPT" >> "$GITHUB_OUTPUT"'
    [step] = [s for s in steps(publish) if "ci publish" in s.get("run", "")]
    assert step["env"]["GRADE_ATTEMPT"] == "${{ needs.grade.outputs.attempt }}"
    assert '--grade-attempt "$GRADE_ATTEMPT"' in step["run"]


def cleanup_steps(job: dict) -> list[dict]:
    return [s for s in steps(job) if "docker rm" in s.get("run", "")]


@pytest.mark.parametrize(("path", "job"), [(GRADE, "grade"), (REGRADE, "regrade")])
def test_every_grading_job_removes_its_own_containers_however_it_ends(path: Path, job: str) -> None:
    """A cancelled run's grader may be killed before it removes its container: the job's last
    step, run even on cancel, removes the containers labelled with this job's owner, and only those."""
    from grader.sandbox.docker import OWNER_ENV, OWNER_LABEL

    spec = load(path)["jobs"][job]
    owner = spec["env"][OWNER_ENV]
    assert "${{ github.run_id }}" in owner and "${{ github.run_attempt }}" in owner
    if "matrix" in spec.get("strategy", {}):
        assert "${{ matrix.shard }}" in owner  # shards run side by side on one engine
    [cleanup] = cleanup_steps(spec)
    assert cleanup["if"] == "always()" and steps(spec)[-1] is cleanup
    assert f'--filter "label={OWNER_LABEL}=${OWNER_ENV}"' in cleanup["run"]


def test_later_jobs_read_only_outputs_the_policy_step_writes(workflow) -> None:
    declared = workflow["jobs"]["policy"]["outputs"]
    assert all(
        value == f"${{{{ steps.policy.outputs.{key} }}}}" and key in POLICY_OUTPUTS for key, value in declared.items()
    )
    used = set(re.findall(r"needs\.policy\.outputs\.(\w+)", GRADE.read_text()))
    assert used and used <= set(declared)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_zizmor_ignore_is_explained(path: Path) -> None:
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if "zizmor: ignore[" in line:
            reason = line.split("]", 1)[1].strip() or lines[number - 1].strip()
            assert len(reason) > 20 and (reason.startswith("#") or line.strip().startswith("#")), line


def zizmor() -> str | None:
    local = Path(sys.executable).with_name("zizmor")
    return str(local) if local.exists() else shutil.which("zizmor")


@pytest.mark.skipif(zizmor() is None, reason="zizmor is not installed (pip install -e '.[dev]')")
def test_zizmor_finds_nothing_unexplained() -> None:
    done = subprocess.run(
        [zizmor(), "--offline", "--persona", "auditor", "--min-severity", "medium", "--format", "json", str(WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stdout + done.stderr
    unexplained = subprocess.run(
        [zizmor(), "--offline", "--persona", "auditor", "--no-ignores", "--format", "json", str(WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = {f["ident"] for f in json.loads(unexplained.stdout)}
    assert found == {"dangerous-triggers", "self-hosted-runner"}, found  # the two explained in the YAML
    per_file = {
        (Path(*f["locations"][0]["symbolic"]["key"]["Local"].values()).name, f["ident"])
        for f in json.loads(unexplained.stdout)
    }
    assert per_file == {
        ("grade.yml", "dangerous-triggers"),
        ("grade.yml", "self-hosted-runner"),
        ("regrade.yml", "self-hosted-runner"),
        ("runner-cache.yml", "self-hosted-runner"),
    }, per_file


# regrade.yml --------------------------------------------------------------------------------

TOKEN_MARKS = ("github.token", "secrets.", "GITHUB_TOKEN", "GH_TOKEN")


def step_named(job: dict, words: str) -> dict:
    [step] = [s for s in steps(job) if words in s.get("name", "")]
    return step


def regrade_runs(job: dict) -> list[dict]:
    return [s for s in steps(job) if "grader regrade --run-tasks" in s.get("run", "")]


def check_regrade_is_staff_only_and_reads_only(doc: dict) -> None:
    assert set(doc["on"]) == {"workflow_dispatch"}
    assert doc["permissions"] == {}
    jobs = doc["jobs"]
    assert jobs["plan"]["permissions"] == {"contents": "read"}
    assert jobs["regrade"]["permissions"] == {"contents": "read"}
    assert jobs["gather"]["permissions"] == {}
    assert not [name for name, job in jobs.items() if writes(job) or job["permissions"] == "write-all"]
    assert "pull_request" not in json.dumps(doc)  # it grades commits named by the tasks file, no event's


def check_the_token_is_only_in_the_fetch_step(doc: dict) -> None:
    """No token at workflow or job level; one step holds it, in its own env, and only fetches."""
    outside_steps = {key: value for key, value in doc.items() if key != "jobs"}
    outside_steps["jobs"] = {name: {k: v for k, v in job.items() if k != "steps"} for name, job in doc["jobs"].items()}
    assert not any(mark in json.dumps(outside_steps) for mark in TOKEN_MARKS)
    holders = [
        (name, step)
        for name, job in doc["jobs"].items()
        for step in steps(job)
        if any(mark in json.dumps(step) for mark in TOKEN_MARKS)
    ]
    assert [name for name, _ in holders] == ["regrade"]
    [(_, fetch)] = holders
    assert fetch["env"] == {"GITHUB_TOKEN": "${{ github.token }}"}
    assert fetch["run"].strip() == '.venv/bin/grader regrade --run-tasks "$TASKS" --shard "$SHARD" --fetch-only'


def check_the_runner_fetches_then_grades_in_the_container_without_a_token(doc: dict) -> None:
    regrade = doc["jobs"]["regrade"]
    assert "self-hosted" in regrade["runs-on"] and "gpu" in regrade["runs-on"]
    [checkout] = checkouts(regrade)
    assert checkout["with"] == {"fetch-depth": 0, "persist-credentials": False}  # history, no stored token
    fetch, grade = regrade_runs(regrade)
    assert "--fetch-only" in fetch["run"] and "--fetch-only" not in grade["run"]
    assert "env" not in grade and not any(mark in json.dumps(grade) for mark in TOKEN_MARKS)
    assert '--shard "$SHARD"' in grade["run"] and '--out "$RUNNER_TEMP/regrade-out"' in grade["run"]
    assert '--runner docker --image "$GRADER_IMAGE"' in grade["run"]
    assert re.fullmatch(r"[\w./-]+@sha256:[0-9a-f]{64}", regrade["env"]["GRADER_IMAGE"])
    after = steps(regrade)[steps(regrade).index(grade) :]
    assert not any(mark in json.dumps(after) for mark in TOKEN_MARKS)


def check_the_matrix_comes_from_the_plan_job(doc: dict) -> None:
    plan, regrade = doc["jobs"]["plan"], doc["jobs"]["regrade"]
    assert "self-hosted" not in json.dumps(plan["runs-on"])
    step = step_named(plan, "Validate the tasks file")
    assert step["id"] == "plan" and step["env"] == {"TASKS": "${{ inputs.tasks }}"}
    assert 'ci regrade-plan --tasks "$TASKS"' in step["run"]
    assert plan["outputs"] == {key: f"${{{{ steps.plan.outputs.{key} }}}}" for key in REGRADE_PLAN_OUTPUTS}
    assert regrade["needs"] == "plan"
    assert regrade["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert regrade["strategy"]["fail-fast"] is False
    assert isinstance(regrade["strategy"]["max-parallel"], int) and regrade["strategy"]["max-parallel"] >= 1
    assert regrade["env"]["SHARD"] == "${{ matrix.shard }}" and regrade["env"]["TASKS"] == "${{ inputs.tasks }}"
    used = set(re.findall(r"needs\.plan\.outputs\.(\w+)", json.dumps(doc)))
    assert used and used <= set(REGRADE_PLAN_OUTPUTS)


def check_each_shard_uploads_its_own_artifact_and_gather_merges_them(doc: dict) -> None:
    regrade, gather = doc["jobs"]["regrade"], doc["jobs"]["gather"]
    [upload] = [s for s in steps(regrade) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["name"] == "regrade-shard-${{ matrix.shard }}"  # unique per matrix job
    assert upload["with"]["path"] == "${{ runner.temp }}/regrade-out/" and upload["if"] == "${{ !cancelled() }}"
    assert gather["needs"] == ["plan", "regrade"] and "!cancelled()" in gather["if"]
    downloads = [s for s in steps(gather) if s.get("uses", "").startswith("actions/download-artifact@")]
    assert {d["with"]["pattern"] for d in downloads} == {"regrade-shard-*"}
    assert any(d["with"].get("merge-multiple") is True for d in downloads)
    assert all(d["with"]["path"].startswith("${{ runner.temp }}") for d in downloads)
    [merged] = [s for s in steps(gather) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert merged["with"]["name"] == "regrade-results"
    assert not regrade_runs(gather) and not checkouts(gather)  # it never runs what the runners wrote


def check_it_runs_where_and_in_what_grade_yml_grades(doc: dict) -> None:
    grade = load(GRADE)["jobs"]["grade"]
    regrade = doc["jobs"]["regrade"]
    assert regrade["runs-on"] == grade["runs-on"] and regrade["env"]["GRADER_IMAGE"] == grade["env"]["GRADER_IMAGE"]


REGRADE_CHECKS = [
    check_regrade_is_staff_only_and_reads_only,
    check_the_token_is_only_in_the_fetch_step,
    check_the_runner_fetches_then_grades_in_the_container_without_a_token,
    check_the_matrix_comes_from_the_plan_job,
    check_each_shard_uploads_its_own_artifact_and_gather_merges_them,
    check_it_runs_where_and_in_what_grade_yml_grades,
    check_pinned_and_no_credentials,
    check_no_expression_in_scripts,
]


@pytest.mark.parametrize("check", REGRADE_CHECKS, ids=lambda c: c.__name__)
def test_the_regrade_workflow(check) -> None:
    check(load(REGRADE))


def _job(name: str):
    return lambda doc: doc["jobs"][name]


def _step(job: str, words: str):
    return lambda doc: step_named(doc["jobs"][job], words)


FETCH, GRADE_STEP = "Fetch this shard", "Grade the shard"
BREAKS = {  # one way to break each property, and the check that must notice
    "a write permission": (
        lambda d: _job("plan")(d)["permissions"].update(contents="write"),
        check_regrade_is_staff_only_and_reads_only,
    ),
    "workflow-level permissions": (
        lambda d: d.update(permissions={"contents": "read"}),
        check_regrade_is_staff_only_and_reads_only,
    ),
    "gather with a token scope": (
        lambda d: _job("gather")(d).update(permissions={"actions": "read"}),
        check_regrade_is_staff_only_and_reads_only,
    ),
    "a pull_request trigger": (lambda d: d["on"].update(pull_request=None), check_regrade_is_staff_only_and_reads_only),
    "the token at job level": (
        lambda d: _job("regrade")(d)["env"].update(GITHUB_TOKEN="${{ github.token }}"),
        check_the_token_is_only_in_the_fetch_step,
    ),
    "the token in the grading step": (
        lambda d: _step("regrade", GRADE_STEP)(d).update(env={"GITHUB_TOKEN": "${{ github.token }}"}),
        check_the_token_is_only_in_the_fetch_step,
    ),
    "a secret in the grading step": (
        lambda d: _step("regrade", GRADE_STEP)(d).update(env={"HF": "${{ secrets.HF_TOKEN }}"}),
        check_the_token_is_only_in_the_fetch_step,
    ),
    "the token in the plan job": (
        lambda d: _step("plan", "Validate")(d)["env"].update(GITHUB_TOKEN="${{ github.token }}"),
        check_the_token_is_only_in_the_fetch_step,
    ),
    "the fetch step also grades": (
        lambda d: _step("regrade", FETCH)(d).update(
            run=_step("regrade", FETCH)(d)["run"] + " && .venv/bin/grader regrade --out x"
        ),
        check_the_token_is_only_in_the_fetch_step,
    ),
    "grading before fetching": (
        lambda d: _job("regrade")(d)["steps"].insert(2, _job("regrade")(d)["steps"].pop(3)),
        check_the_runner_fetches_then_grades_in_the_container_without_a_token,
    ),
    "the token after the grading": (
        lambda d: _job("regrade")(d)["steps"][-1].update(env={"GITHUB_TOKEN": "${{ github.token }}"}),
        check_the_runner_fetches_then_grades_in_the_container_without_a_token,
    ),
    "a shallow checkout": (
        lambda d: checkouts(_job("regrade")(d))[0]["with"].pop("fetch-depth"),
        check_the_runner_fetches_then_grades_in_the_container_without_a_token,
    ),
    "grading outside the container": (
        lambda d: _step("regrade", GRADE_STEP)(d).update(
            run=_step("regrade", GRADE_STEP)(d)["run"].replace("--runner docker", "--runner local")
        ),
        check_the_runner_fetches_then_grades_in_the_container_without_a_token,
    ),
    "an image by tag": (
        lambda d: _job("regrade")(d)["env"].update(GRADER_IMAGE="ghcr.io/course/grader:latest"),
        check_the_runner_fetches_then_grades_in_the_container_without_a_token,
    ),
    "a literal matrix": (
        lambda d: _job("regrade")(d)["strategy"].update(matrix={"shard": [0, 1]}),
        check_the_matrix_comes_from_the_plan_job,
    ),
    "fail-fast": (
        lambda d: _job("regrade")(d)["strategy"].update({"fail-fast": True}),
        check_the_matrix_comes_from_the_plan_job,
    ),
    "an undeclared plan output": (
        lambda d: _job("gather")(d).update({"if": "${{ needs.plan.outputs.secret }}"}),
        check_the_matrix_comes_from_the_plan_job,
    ),
    "one artifact name for every shard": (
        lambda d: [s for s in steps(_job("regrade")(d)) if "upload-artifact" in s.get("uses", "")][0]["with"].update(
            name="result"
        ),
        check_each_shard_uploads_its_own_artifact_and_gather_merges_them,
    ),
    "no merged artifact": (
        lambda d: [s for s in steps(_job("gather")(d)) if "download-artifact" in s.get("uses", "")][1]["with"].pop(
            "merge-multiple"
        ),
        check_each_shard_uploads_its_own_artifact_and_gather_merges_them,
    ),
    "another runner": (
        lambda d: _job("regrade")(d).update({"runs-on": "ubuntu-latest"}),
        check_it_runs_where_and_in_what_grade_yml_grades,
    ),
    "an unpinned action": (
        lambda d: checkouts(_job("plan")(d))[0].update(uses="actions/checkout@v4"),
        check_pinned_and_no_credentials,
    ),
    "stored credentials": (
        lambda d: checkouts(_job("plan")(d))[0]["with"].update({"persist-credentials": True}),
        check_pinned_and_no_credentials,
    ),
    "an expression in a script": (
        lambda d: _step("regrade", FETCH)(d).update(
            run='.venv/bin/grader regrade --run-tasks "${{ inputs.tasks }}" --fetch-only'
        ),
        check_no_expression_in_scripts,
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_each_regrade_check_fails_on_a_broken_copy(case: str) -> None:
    breaks, check = BREAKS[case]
    broken = copy.deepcopy(load(REGRADE))
    breaks(broken)
    assert broken != load(REGRADE)
    with pytest.raises(AssertionError):
        check(broken)


def _linter(name: str) -> str:
    found = Path(sys.executable).parent / name
    if not found.exists():
        pytest.skip(f"{name} is not installed (the dev extra has it)")
    return str(found)


def test_actionlint_and_githubs_schema_accept_both_workflows_and_catch_a_broken_one(tmp_path: Path) -> None:
    actionlint, schema = _linter("actionlint"), _linter("check-jsonschema")
    config = ["-config-file", str(ROOT / ".github" / "actionlint.yaml")]
    for path in ALL:
        linted = subprocess.run([actionlint, *config, str(path)], capture_output=True, text=True, timeout=120)
        assert linted.returncode == 0, linted.stdout + linted.stderr
    validated = subprocess.run(
        [schema, "--builtin-schema", "vendor.github-workflows", *map(str, ALL)], capture_output=True, text=True
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    broken = tmp_path / "grade.yml"
    broken.write_text(GRADE.read_text().replace("needs.grade.outputs.attempt", "needs.grade.outputs.attempts"))
    linted = subprocess.run([actionlint, *config, str(broken)], capture_output=True, text=True, timeout=120)
    assert linted.returncode != 0 and "attempts" in linted.stdout
    bad_schema = tmp_path / "regrade.yml"
    bad_schema.write_text(REGRADE.read_text().replace("timeout-minutes: 360", "timeout-minutes: [360]"))
    assert subprocess.run([schema, "--builtin-schema", "vendor.github-workflows", str(bad_schema)]).returncode != 0


def test_a_grading_job_restores_the_set_up_and_never_saves_one() -> None:
    """An ephemeral runner's grading sets up from the cache runner-cache.yml saved for this base
    commit; nothing a grading ran (student models) can write a cache the next grading restores."""
    grade = load(GRADE)["jobs"]["grade"]
    [restore] = [s for s in steps(grade) if s.get("uses", "").startswith("actions/cache")]
    assert restore["uses"].startswith("actions/cache/restore@")
    setup = next(s for s in steps(grade) if s.get("run") == "./run setup")
    assert steps(grade).index(restore) < steps(grade).index(setup)
    for path in (GRADE, REGRADE):  # no save, and no read-write actions/cache, in a job near student files
        text = path.read_text()
        assert "actions/cache/save@" not in text and "actions/cache@" not in text
    build = load(RUNNER_CACHE)["jobs"]["build"]
    [key_step] = [s for s in steps(build) if s.get("id") == "key"]
    [save] = [s for s in steps(build) if s.get("uses", "").startswith("actions/cache/save@")]
    assert steps(build).index(key_step) < next(i for i, s in enumerate(steps(build)) if s.get("run") == "./run setup")
    assert key_step["env"]["KEY"] == restore["with"]["key"]  # computed before the build, as grade.yml's
    assert save["with"]["key"] == "${{ steps.key.outputs.key }}" and save["with"]["path"] == restore["with"]["path"]
    assert build["permissions"] == {"contents": "read"}


def test_the_grading_step_passes_a_cancel_on_to_the_grader(tmp_path: Path) -> None:
    """GitHub's runner signals the step's shell on a cancel; the step's own script must hand the stop
    to `grader check` so it can remove its container. Run here with a stand-in grader that records
    the signal it gets."""
    import os
    import signal
    import time

    [step] = [s for s in steps(load()["jobs"]["grade"]) if "grader check" in s.get("run", "")]
    base = tmp_path / "base"
    (base / ".venv" / "bin").mkdir(parents=True)
    stand_in = base / ".venv" / "bin" / "grader"
    marker = tmp_path / "got"
    stand_in.write_text(
        f"#!{sys.executable}\nimport signal, sys, time\n"
        f"def stop(n, f):\n    open({str(marker)!r}, 'w').write(str(n)); sys.exit(128 + n)\n"
        "signal.signal(signal.SIGTERM, stop)\nsignal.signal(signal.SIGINT, stop)\ntime.sleep(60)\n"
    )
    stand_in.chmod(0o755)
    env = {
        **os.environ,
        "FOLDER": "f",
        "GRADER_IMAGE": "i",
        "GITHUB_WORKSPACE": str(tmp_path),
        "RUNNER_TEMP": str(tmp_path),
    }
    shell = subprocess.Popen(["bash", "-e", "-c", step["run"]], cwd=base, env=env, stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    shell.send_signal(signal.SIGINT)  # what the runner sends first
    out, _ = shell.communicate(timeout=30)
    assert marker.read_text() == str(int(signal.SIGTERM)), "the grader never heard of the cancel"
    assert shell.returncode == 128 + signal.SIGTERM and "exited with 143" in out
