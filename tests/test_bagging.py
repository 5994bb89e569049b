"""Auto mode's ensemble of all candidates: networks bagged over their folds beside the linear
members, weighed on the same out-of-fold evidence; a model folder that loads, predicts and
serves like any other."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from conftest import make_rows
from fastapi.testclient import TestClient
from test_auto import config, quick_preset

from mmfuse import Predictor
from mmfuse.auto import AutoSearch, bagging, linear
from mmfuse.auto.bagging import BAG_DIR, NAME, OOF_FILE, SHARED_NAME
from mmfuse.auto.kinds import CANDIDATE_KINDS, networks
from mmfuse.ensemble.model import MEMBERS_DIR, EnsembleModel
from mmfuse.ensemble.networks import NetworkMember
from mmfuse.io import load_tensors
from mmfuse.serving.app import create_app


def test_networks_join_the_ensemble_as_their_fold_models(tmp_path: Path) -> None:
    rows = make_rows(tmp_path, 75, seed=11)  # 3 folds of 25: the last batch of 16 is uneven
    rows.to_csv(tmp_path / "train.csv", index=False)
    cfg = config(tmp_path, "caption")
    cfg.data.allow_missing = True
    auto = AutoSearch(cfg, quick_preset(300, folds=3, fusions=("concat",), seeds=2),
                      keep_candidates=True)
    auto.fit(tmp_path / "train.csv", run_dir=tmp_path / "run")
    board = {r.candidate: r for r in auto.leaderboard_}
    networks = [member for member, _, _ in auto.bag_.networks]
    assert [m.name for m in networks] == [  # text alone: the linear members' n-grams
        "image: efficientnet-lite0", "concat (efficientnet-lite0 + ngram)"]
    # time left over: each network fitted again with a second seed, averaged into its member
    assert all(len(m.folds) == 3 * 2 for m in networks)
    assert all(board[f"member: {m.name}, seed 2"].folds == 3 for m in networks)
    # Weighed on the evidence every candidate was judged by: never below the best of them,
    # and every member it weighed shows its weight (0 when left out), summing to 1.
    assert board[NAME].folds == 3
    judged = [r.val_metric for r in auto.leaderboard_ if r.val_metric is not None
              and r.candidate != NAME]
    assert board[NAME].val_metric >= max(judged) - 1e-9
    weights = [r.weight for r in auto.leaderboard_ if r.weight is not None]
    assert len(weights) == len(auto.bag_.members()[0]) and sum(weights) == pytest.approx(1.0)
    # Every registered candidate kind tried something on this small table.
    rows_of_kind = {"linear members": lambda r: r.candidate == linear.NAME,
                    "networks": lambda r: r.model is not None and r.scored,
                    "repeats": lambda r: r.candidate.endswith(", seed 2"),
                    "ensemble of all": lambda r: r.candidate in (NAME, SHARED_NAME)}
    assert set(rows_of_kind) == set(CANDIDATE_KINDS.names())
    assert all(any(found(r) for r in auto.leaderboard_) for found in rows_of_kind.values())

    # Every member, linear and network, in one folder.
    chosen = auto.candidates_[NAME].fitted_
    members = auto.bag_.linear.members + networks
    ensemble = EnsembleModel(cfg, chosen.classes, members, "selection",
                             np.full(len(members), 1 / len(members)), cache=chosen.cache,
                             encoders=chosen.encoders)
    # A folder that round-trips: saved, loaded, the same probabilities.
    ensemble.save(tmp_path / "all")
    test = make_rows(tmp_path, 13, seed=12)
    test.loc[2, "caption"] = ""  # mixed holes: a row without its text
    test.to_csv(tmp_path / "test.csv", index=False)
    loaded = Predictor.load(tmp_path / "all")
    expected = Predictor.of(ensemble).predict_proba(tmp_path / "test.csv")
    np.testing.assert_allclose(loaded.predict_proba(tmp_path / "test.csv").to_numpy(),
                               expected.to_numpy(), atol=1e-6)

    # Bagging, against fold models loaded one by one (each with its own encoders).
    rows_read = loaded.read(tmp_path / "test.csv")
    inputs = loaded.fitted_.inputs(rows_read)
    for i, member in enumerate(loaded.fitted_.members):
        if not isinstance(member, NetworkMember):
            continue
        folds = [Predictor.load(tmp_path / "all" / MEMBERS_DIR / str(i) / f"fold{k}")
                 for k in range(len(member.folds))]
        alone = np.mean([fold.outputs(rows_read)[0] for fold in folds], axis=0)
        np.testing.assert_allclose(member.predict_proba(inputs), alone, atol=1e-6)
    # ... which share one frozen Lite0 instead of a copy per fold model
    lite0 = {id(fold.model.encoders["image"]) for m in loaded.fitted_.members
             if isinstance(m, NetworkMember) for fold in m.folds if "image" in fold.model.encoders}
    assert len(lite0) == 1

    # Served: encoders run live on the upload, the same probabilities as predict.
    served = []
    with TestClient(create_app(loaded)) as client:
        for _, row in test.iterrows():
            body = {"image": base64.b64encode((tmp_path / row["image"]).read_bytes()).decode(),
                    "text": row["caption"] if isinstance(row["caption"], str) else ""}
            response = client.post("/v1/predict", json=body)
            assert response.status_code == 200, response.text
            served.append([response.json()["probabilities"][c] for c in expected.columns])
    np.testing.assert_allclose(np.asarray(served), expected.to_numpy(), atol=1e-5)


def test_a_killed_search_resumes_with_its_finished_members(tmp_path: Path, monkeypatch) -> None:
    make_rows(tmp_path, 60, seed=13).to_csv(tmp_path / "train.csv", index=False)
    cfg, preset = config(tmp_path, "caption"), quick_preset(300, folds=3, fusions=("concat",))
    run = tmp_path / "run"
    fit, fitted = Predictor.fit, []

    def killed_at_fusion(self, *args, **kwargs):
        if self.config.model.modalities == ["image", "text"]:
            raise KeyboardInterrupt  # the image candidate and the linear ensemble are done
        fitted.append(self.config.model.modalities)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "fit", killed_at_fusion)
    with pytest.raises(KeyboardInterrupt):
        AutoSearch(cfg, preset).fit(tmp_path / "train.csv", run_dir=run)
    assert fitted == [["image"]] * 3
    kept = run / BAG_DIR
    assert (kept / "linear" / OOF_FILE).exists() and (kept / "0" / OOF_FILE).exists()
    image_oof = load_tensors(kept / "0" / OOF_FILE)["oof"].numpy()

    def counted(self, *args, **kwargs):
        fitted.append(self.config.model.modalities)
        return fit(self, *args, **kwargs)

    fitted.clear()
    monkeypatch.setattr(Predictor, "fit", counted)
    auto = AutoSearch(cfg, preset, keep_candidates=True)
    auto.fit(tmp_path / "train.csv", run_dir=run, resume=True)
    refit = auto.best_.is_network and auto.best_.config.model.modalities == ["image"]
    assert fitted.count(["image"]) == int(refit)  # its folds came from the run folder
    assert fitted.count(["image", "text"]) >= 3
    names = [m.name for m, _, _ in auto.bag_.networks]
    assert names == ["image: efficientnet-lite0", "concat (efficientnet-lite0 + ngram)"]
    np.testing.assert_array_equal(auto.bag_.networks[0][1], image_oof)
    assert auto.bag_.linear is not None and NAME in {r.candidate for r in auto.leaderboard_}
    assert not kept.exists()  # finished: the run folder holds the chosen model only
    assert len(Predictor.load(run).predict(tmp_path / "train.csv")) == 60


def test_a_network_judged_on_one_fold_joins_an_ensemble_on_the_rows_it_covers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fusion stops after its first fold (as the fine-tuned MiniLM does when its k folds
    would not fit): it is left out of the ensemble weighed on every row, and joins a second
    one weighed and judged on that fold's rows, which scores at least what it does there."""
    monkeypatch.setattr(bagging, "MIN_SHARED_ROWS", 10)
    monkeypatch.setattr(networks, "can_finish",  # singles finish, the fusion stops after one fold
                        lambda name, *args: name.startswith(("image:", "text:")))
    make_rows(tmp_path, 75, seed=14).to_csv(tmp_path / "train.csv", index=False)
    auto = AutoSearch(config(tmp_path, "caption"), quick_preset(300, folds=3, fusions=("concat",)),
                      keep_candidates=True)
    auto.fit(tmp_path / "train.csv")
    board = {r.candidate: r for r in auto.leaderboard_}
    fusion = "concat (efficientnet-lite0 + ngram)"
    (member, _, covered), = [n for n in auto.bag_.networks if n[0].name == fusion]
    assert board[fusion].folds == 1 and len(member.folds) == 1 and covered.sum() == 25
    assert fusion not in [m.name for m in auto.bag_.members()[0]]
    assert board[NAME].folds == 3 and board[SHARED_NAME].folds == 1
    shared = auto.candidates_[SHARED_NAME].fitted_
    assert len(shared.out_of_fold) == 25
    assert board[SHARED_NAME].val_metric >= board[fusion].val_metric - 1e-9
    weights = [r.weight for r in auto.leaderboard_ if r.weight is not None]
    if weights:  # the better ensemble's selection weights, over every member it weighed
        assert sum(weights) == pytest.approx(1.0)
    test = make_rows(tmp_path, 9, seed=15)
    test.to_csv(tmp_path / "test.csv", index=False)
    probabilities = auto.candidates_[SHARED_NAME].predict_proba(tmp_path / "test.csv")
    np.testing.assert_allclose(probabilities.to_numpy().sum(axis=1), 1.0, atol=1e-5)
