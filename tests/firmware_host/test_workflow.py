"""The GitHub Actions release example parses and does build -> sign -> push -> verify on a version tag,
with commands the CLI accepts."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from weatherfleet.cli import build_parser
from weatherfleet.firmware import features as feature_table

WORKFLOW = Path(__file__).resolve().parents[2] / "firmware" / "examples" / "release-workflow.yml"


def load() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_workflow_runs_on_version_tags_with_least_privilege() -> None:
    workflow = load()
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as true
    assert triggers["push"]["tags"] == ["v[0-9]+.[0-9]+.[0-9]+*"]
    assert workflow["permissions"] == {"contents": "read"}


def test_workflow_builds_signs_pushes_and_verifies_every_variant() -> None:
    job = load()["jobs"]["release"]
    names = [step["name"] for step in job["steps"]]
    for before, after in [("Build", "Sign"), ("Sign", "Push"), ("Push", "Verify")]:
        assert names.index(before) < names.index(after)
    runs = {step["name"]: step.get("run", "") for step in job["steps"]}
    assert "weatherfleet firmware build" in runs["Build"]
    assert "weatherfleet firmware sign" in runs["Sign"]
    assert "weatherfleet firmware push" in runs["Push"]
    assert "weatherfleet firmware verify" in runs["Verify"]
    for variant in job["strategy"]["matrix"]["include"]:
        feature_table.resolve(variant["features"].split(","))  # raises on an invalid variant


def test_workflow_keeps_secrets_out_of_command_lines_and_logs() -> None:
    job = load()["jobs"]["release"]
    for step in job["steps"]:
        run = step.get("run", "")
        assert "secrets." not in run, f"step {step['name']} puts a secret on a command line"
    sign = next(s for s in job["steps"] if s["name"] == "Sign")
    assert "umask 077" in sign["run"] and "rm -f" in sign["run"]


def test_workflow_commands_parse_with_the_cli() -> None:
    import sys

    job = load()["jobs"]["release"]
    build = next(s for s in job["steps"] if s["name"] == "Build")["run"]
    argv = shlex.split(
        build.replace("${{ matrix.features }}", "bme280,influx")
        .replace("${VERSION#v}", "1.0.0")
        .replace("${{ matrix.variant }}", "garden")
    )
    assert argv[:3] == ["weatherfleet", "firmware", "build"]
    saved = sys.argv
    try:
        sys.argv = ["weatherfleet", "firmware"]
        args = build_parser().parse_args(argv[1:])
    finally:
        sys.argv = saved
    assert args.action == "build" and args.features == "bme280,influx" and args.version == "1.0.0"
