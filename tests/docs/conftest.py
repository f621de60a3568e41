"""Fixtures of the documentation tests: one site build shared by the session."""

from __future__ import annotations

import pytest
from docsite import Site, build_site


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    built = build_site(tmp_path_factory.mktemp("docs_site"))
    print(f"docs build: {built.seconds:.1f} s")
    return built
