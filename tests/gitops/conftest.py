"""Fixtures for the gitops tests: the built example cluster and the schemas to validate it against."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the gitops_* helper modules beside this file

import gitops_build


@pytest.fixture(scope="session")
def example() -> list[dict]:
    """Everything the example cluster runs: CRDs, PKI, infrastructure, operator, fleets."""
    return gitops_build.build(gitops_build.GITOPS / "overlays" / "example")


@pytest.fixture(scope="session")
def infrastructure() -> list[dict]:
    return gitops_build.build(gitops_build.GITOPS / "overlays" / "example" / "infrastructure")


@pytest.fixture(scope="session")
def shared_schemas() -> Path:
    if not gitops_build.SHARED_SCHEMAS.is_dir():
        pytest.skip(
            f"{gitops_build.SHARED_SCHEMAS} is absent: the cert-manager and Argo CD CRD schemas live beside the "
            "repository (../shared/schemas), not in it"
        )
    return gitops_build.SHARED_SCHEMAS
