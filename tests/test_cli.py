"""`python -m repro evaluate` end to end on the tiny synthetic city, and its errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from repro.cli import main
from repro.data.datasets import load_split
from repro.data.dbstruct import load_dbstruct

pytestmark = pytest.mark.filterwarnings("ignore:.*randomly initialised")

EVAL = ["evaluate", "--dataset", "synthetic", "--split", "test", "--weights", "none", "--num-clusters", "8",
        "--init-images", "40", "--ns", "1", "5", "10", "1000"]


def brute_force_recall(q, db, positives, n):
    d = ((q[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(-1)
    hits = 0
    for i in range(len(q)):
        top = np.argsort(d[i], kind="stable")[:n]
        hits += bool(set(top) & set(positives[i].tolist()))
    return 100.0 * hits / len(q)


def test_evaluate_json_matches_brute_force(tiny_city, tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    ckpt = tmp_path / "model.pth"
    # Capture the initialised model so the recall can be recomputed independently.
    import repro.evaluate as ev
    seen = {}
    real = ev.evaluate_split

    def spy(model, split, *a, **k):
        seen["model"], seen["split"] = model, split
        return real(model, split, *a, **k)

    monkeypatch.setattr(ev, "evaluate_split", spy)
    assert main(EVAL + ["--data-root", str(tiny_city), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["recall"]) == {"1", "5", "10", "1000"}
    assert result["recall"]["1000"] == 100.0  # N clipped at the database size: every query has a positive
    model, split = seen["model"], seen["split"]
    db = ev.extract_descriptors(model, split.db_paths)
    q = ev.extract_descriptors(model, split.q_paths)
    for n in (1, 5, 10):
        assert result["recall"][str(n)] == pytest.approx(brute_force_recall(q, db, split.positives, n))
    assert result["config"]["alpha"] == result["init"]["netvlad"]["alpha"] != 100.0  # the rule's alpha was used

    # A saved model evaluates to the same numbers through --checkpoint.
    from repro.model import save_model
    save_model(ckpt, model)
    out2 = tmp_path / "r2.json"
    assert main(["evaluate", "--dataset", "synthetic", "--split", "test", "--data-root", str(tiny_city),
                 "--checkpoint", str(ckpt), "--json", str(out2)]) == 0
    assert json.loads(out2.read_text())["recall"]["1"] == result["recall"]["1"]


def test_fmax_with_whitening_fitted_on_the_training_database(tiny_city, tmp_path, capsys, monkeypatch):
    import repro.evaluate as ev

    fitted_on = []
    real = ev.extract_descriptors

    def spy(model, paths, *a, **k):
        if k.get("desc", "").startswith("whitening"):
            fitted_on.append(list(paths))
        return real(model, paths, *a, **k)

    monkeypatch.setattr(ev, "extract_descriptors", spy)
    out = tmp_path / "f.json"
    assert main(["evaluate", "--dataset", "synthetic", "--data-root", str(tiny_city), "--weights", "none",
                 "--pooling", "fmax", "--fmax-size", "2", "2", "--whiten-dim", "64", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dim"] == 64 and result["config"]["fmax_output_size"] == [2, 2]
    train = load_split("synthetic", tiny_city, "train")
    # the authors' addPCA: fitted on training database images, never on the evaluated (test) database
    assert fitted_on == [list(train.db_paths)]
    assert result["init"] == {"dataset": "synthetic", "split": "train", "data_root": str(tiny_city),
                              "num_images": train.num_db, "transductive": False,
                              "whitening": {"dim": 64, "num_images": train.num_db}}
    printed = capsys.readouterr().out
    assert "recall@1" in printed and f"whitening fitted on: synthetic train database ({train.num_db} images)" in printed


def test_netvlad_initialised_on_the_training_split_or_init_from(tiny_city, tmp_path, monkeypatch):
    import repro.evaluate as ev

    used = []
    real = ev.init_netvlad_from_images
    monkeypatch.setattr(ev, "init_netvlad_from_images",
                        lambda model, paths, *a, **k: used.append(list(paths)) or real(model, paths, *a, **k))
    out = tmp_path / "n.json"
    assert main(EVAL + ["--data-root", str(tiny_city), "--json", str(out)]) == 0
    init = json.loads(out.read_text())["init"]
    train = load_split("synthetic", tiny_city, "train")
    assert used[-1] == list(train.db_paths) and (init["dataset"], init["split"]) == ("synthetic", "train")
    assert init["num_images"] == train.num_db and not init["transductive"] and init["netvlad"]["alpha"] > 0
    # another dataset's (here: split's) database, named explicitly
    assert main(EVAL + ["--data-root", str(tiny_city), "--init-from", f"synthetic:{tiny_city}:val",
                        "--json", str(out)]) == 0
    init = json.loads(out.read_text())["init"]
    assert used[-1] == list(load_split("synthetic", tiny_city, "val").db_paths) and init["split"] == "val"


def test_a_dataset_without_training_split_falls_back_with_a_warning(tmp_path):
    """Tokyo 24/7 has no training split: without --init-from the fit is transductive, and says so."""
    from repro.data.synthetic import make_layout_city

    root = make_layout_city(tmp_path / "t247", "tokyo247", preset="tiny", places=2, query_places=1,
                            image_size=(48, 64))
    out = tmp_path / "t.json"
    with pytest.warns(UserWarning, match="no training split.*transductive.*--init-from"):
        assert main(["evaluate", "--dataset", "tokyo247", "--data-root", str(root), "--weights", "none",
                     "--num-clusters", "4", "--init-images", "10", "--json", str(out)]) == 0
    init = json.loads(out.read_text())["init"]
    assert init["transductive"] is True and (init["dataset"], init["split"]) == ("tokyo247", "test")


def run_cli_error(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and err.startswith("error: ")
    return err


def test_missing_data_root(tmp_path, capsys):
    err = run_cli_error(EVAL + ["--data-root", str(tmp_path / "nowhere")], capsys)
    assert "nowhere" in err and "database/" in err


def test_missing_image_fails_before_model_building(tiny_city, tmp_path, capsys, monkeypatch):
    import shutil
    root = tmp_path / "city"
    shutil.copytree(tiny_city, root)
    db = load_dbstruct(root / "test.mat")
    (root / "database" / db.db_image_fns[3]).unlink()
    monkeypatch.setattr("repro.model.build_model", lambda *a, **k: pytest.fail("built a model"))
    err = run_cli_error(EVAL + ["--data-root", str(root)], capsys)
    assert "1 of" in err and db.db_image_fns[3] in err


def test_unreadable_image_with_decode_check(tiny_city, tmp_path, capsys):
    import shutil
    root = tmp_path / "city"
    shutil.copytree(tiny_city, root)
    db = load_dbstruct(root / "test.mat")
    bad = root / "queries" / load_dbstruct(root / "test.mat").q_image_fns[0]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    err = run_cli_error(EVAL + ["--data-root", str(root), "--check-images", "decode"], capsys)
    assert "truncated" in err and bad.name in err
    assert db.num_images > 0


def test_mat_with_missing_field(tiny_city, tmp_path, capsys):
    import scipy.io
    import shutil
    root = tmp_path / "city"
    shutil.copytree(tiny_city, root)
    mat = scipy.io.loadmat(root / "test.mat")
    s = mat["dbStruct"][0, 0]
    fields = {n: s[n] for n in s.dtype.names if n != "utmQ"}
    scipy.io.savemat(root / "test.mat", {"dbStruct": fields})
    err = run_cli_error(EVAL + ["--data-root", str(root)], capsys)
    assert "utmQ" in err and "test.mat" in err


def test_weights_of_another_architecture(tiny_city, tmp_path, capsys):
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "alexnet.pth")
    args = EVAL + ["--data-root", str(tiny_city), "--backbone", "vgg16", "--weights", str(tmp_path / "alexnet.pth")]
    err = run_cli_error(args, capsys)
    assert "does not hold vgg16 weights" in err


def test_unknown_backbone_is_a_usage_error(tiny_city):
    with pytest.raises(SystemExit) as exc:
        main(EVAL + ["--data-root", str(tiny_city), "--backbone", "resnet50"])
    assert exc.value.code == 2


def test_module_entry_point(tmp_path):
    """`python -m repro` runs as a program and reports user errors without a traceback."""
    proc = subprocess.run([sys.executable, "-m", "repro", *EVAL, "--data-root", str(tmp_path / "missing")],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    assert "data root for 'synthetic' not found" in proc.stderr and "Traceback" not in proc.stderr


def test_smoke_check_writes_record(tiny_city, tmp_path, capsys):
    from repro.smoke import run_smoke
    record = run_smoke(str(tmp_path / "smoke.json"), root=tiny_city)
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert saved["recall"] == record["recall"] and saved["synthetic"] is True
    assert set(saved["recall"]) == {"1", "5", "10"}
    assert all(0 <= v <= 100 for v in saved["recall"].values())
    assert "git_commit" in saved
    assert "recall@1" in capsys.readouterr().out
