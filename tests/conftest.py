"""Shared fixtures: the tiny synthetic city, generated once per test session."""
import pytest

from repro.data.synthetic import make_synthetic_city


@pytest.fixture(scope="session")
def tiny_city(tmp_path_factory):
    """Root of a tiny synthetic city (train/val/test splits, Pittsburgh layout)."""
    return make_synthetic_city(tmp_path_factory.mktemp("city") / "tiny", preset="tiny", seed=0)
