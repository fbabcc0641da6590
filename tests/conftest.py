"""Shared fixtures: the tiny synthetic city (once per test session), the fake
street of ``train_fakes`` (once per test module) and a one-thread guard."""
import pytest
import torch

from repro.data.synthetic import make_synthetic_city
from train_fakes import make_fake_street, single_thread


@pytest.fixture(scope="session")
def tiny_city(tmp_path_factory):
    """Root of a tiny synthetic city (train/val/test splits, Pittsburgh layout)."""
    return make_synthetic_city(tmp_path_factory.mktemp("city") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    """Root of the fake street: 12 queries, 40 database images, all three splits the same street."""
    return make_fake_street(tmp_path_factory.mktemp("street"))


@pytest.fixture
def one_thread():
    """Runs the test on one torch thread (see ``train_fakes.single_thread``), then restores the count.
    Modules of tiny training runs use it for every test: ``pytest.mark.usefixtures("one_thread")``."""
    before = single_thread()
    yield
    torch.set_num_threads(before)
