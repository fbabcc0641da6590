"""Files from elsewhere load without running code from them: crafted checkpoints,
weights and VPR-Bench ground truth whose unpickling would create a file."""

import numpy as np
import pytest
import torch

from repro.data.vprbench import load_vprbench
from repro.errors import DatasetError, WeightsError
from repro.model import build_backbone, load_model
from repro.safe_load import load_object_npy, load_torch_file
from repro.train.checkpoint import load_training_checkpoint, rng_states, set_rng_states


class CreatesAFile:
    """Unpickling this calls open(marker, "w"): the file appears if code from the pickle runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_torch_file(path, marker, wrap=lambda evil: {"config": {}, "state_dict": {"w": evil}}):
    torch.save(wrap(CreatesAFile(marker)), path)
    return path


def test_the_crafted_file_is_really_malicious(tmp_path):
    """Control: the unsafe loader does run it (so the tests below can fail)."""
    marker = tmp_path / "pwned"
    path = crafted_torch_file(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("loader", [
    lambda p: load_model(p),
    lambda p: load_training_checkpoint(p),
    lambda p: build_backbone("alexnet", weights=str(p)),
])
def test_crafted_checkpoints_and_weights_are_refused(tmp_path, loader):
    marker = tmp_path / "pwned"
    path = crafted_torch_file(tmp_path / "evil.pt", marker)
    with pytest.raises(WeightsError, match="refused to load.*(io|builtins).open"):
        loader(path)
    assert not marker.exists()


def test_crafted_vprbench_ground_truth_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    root = tmp_path / "bench"
    for name in ("query", "ref"):
        (root / name).mkdir(parents=True)
        from PIL import Image
        Image.new("RGB", (40, 40)).save(root / name / "0.png")
    gt = np.empty((1, 2), dtype=object)
    gt[0, 0], gt[0, 1] = 0, [0, CreatesAFile(marker)]
    np.save(root / "ground_truth_new.npy", gt, allow_pickle=True)
    with pytest.raises(DatasetError, match="refused to load.*(io|builtins).open"):
        load_vprbench(root)
    assert not marker.exists()
    np.load(root / "ground_truth_new.npy", allow_pickle=True)  # control: numpy's own loader runs it
    assert marker.exists()


def test_ground_truth_of_integers_and_lists_loads(tmp_path):
    gt = np.empty((3, 2), dtype=object)
    gt[0] = 0, [0, 1]
    gt[1] = np.int64(1), np.array([2, 3])
    gt[2] = 2, []
    np.save(tmp_path / "gt.npy", gt, allow_pickle=True)
    loaded = load_object_npy(tmp_path / "gt.npy")
    assert loaded.shape == (3, 2) and list(loaded[0, 1]) == [0, 1] and list(loaded[1, 1]) == [2, 3]
    np.save(tmp_path / "plain.npy", np.arange(6).reshape(3, 2))
    assert load_object_npy(tmp_path / "plain.npy").tolist() == [[0, 1], [2, 3], [4, 5]]
    bad = np.empty((1, 2), dtype=object)
    bad[0] = 0, "not an index"
    np.save(tmp_path / "bad.npy", bad, allow_pickle=True)
    with pytest.raises(DatasetError, match="expected integers"):
        load_object_npy(tmp_path / "bad.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DatasetError, match="not a readable .npy"):
        load_object_npy(tmp_path / "junk.npy")


def test_checkpoints_of_the_earlier_format_still_load(tmp_path):
    """Before this format, the numpy RNG state and the miner's cache were numpy arrays inside the pickle:
    such files load through the same safe path (numpy's array constructors only), and resume from them works."""
    np.random.seed(7)
    old = {"epoch": 1, "rng": {"torch": torch.get_rng_state(), "numpy_global": np.random.get_state(),
                               "python": __import__("random").getstate()},
           "miner": {"neg_cache": {3: np.array([5, 6], dtype=np.int64)}}, "best": {"score": float("-inf")}}
    expected = np.random.random_sample(4)
    torch.save(old, tmp_path / "old.pt")
    loaded = load_training_checkpoint(tmp_path / "old.pt")
    assert loaded["miner"]["neg_cache"][3].tolist() == [5, 6]
    set_rng_states(loaded["rng"])
    np.testing.assert_array_equal(np.random.random_sample(4), expected)


def test_the_new_rng_state_round_trips_through_a_plain_weights_only_load(tmp_path):
    np.random.seed(11)
    torch.save({"rng": rng_states()}, tmp_path / "new.pt")
    expected = np.random.random_sample(3)
    state = torch.load(tmp_path / "new.pt", weights_only=True)["rng"]  # no numpy allow-list needed
    set_rng_states(state)
    np.testing.assert_array_equal(np.random.random_sample(3), expected)


def test_a_damaged_torch_file_gives_a_weights_error(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(WeightsError):
        load_torch_file(tmp_path / "x.pt")
    with pytest.raises(WeightsError, match="not found"):
        load_torch_file(tmp_path / "absent.pt")

