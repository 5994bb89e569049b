"""Auto mode on generated data where the right answer is known in advance."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from conftest import COLOURS, draw, make_rows

from mmfuse import Config, DataConfig, EncoderConfig, Predictor, TrainConfig, deadline
from mmfuse.auto import AutoSearch, Preset
from mmfuse.auto.leaderboard import read_leaderboard

# The default portfolio's encoders, shrunk: 64 px images, a small n-gram projection.
TINY = Preset(
    "tiny", 120,
    image_encoders=(EncoderConfig("efficientnet-lite0", image_size=64),),
    text_encoders=(EncoderConfig("minilm", max_length=16),
                   EncoderConfig("ngram", options={"dim": 32, "buckets": 4096})),
    fusions=("concat", "stack"),
    epochs=25,
    folds=3,
)
MADE_UP_SCRIPT = [chr(c) for c in range(0xE000, 0xE020)]  # Private Use Area: no tokenizer knows it


def config(tmp_path: Path, text_col: str = "text") -> Config:
    return Config(
        data=DataConfig(image_cols=["image"], text_cols=[text_col], label_col="label",
                        val_fraction=0.25),
        train=TrainConfig(batch_size=32, num_workers=0, patience=6, lr=3e-3),
        cache_dir=str(tmp_path / "cache"),
    )


def word(rng: random.Random, length: int = 4) -> str:
    return "".join(rng.choice(MADE_UP_SCRIPT) for _ in range(length))


def noise_image(path: Path, rng: random.Random) -> None:
    draw(path, rng.choice(list(COLOURS)), rng)


def made_up_script_rows(folder: Path, n: int, seed: int) -> pd.DataFrame:
    """The label is which of two made-up words a sentence of random made-up words contains;
    the image is a random square that says nothing about it."""
    rng = random.Random(seed)
    markers = {"alpha": "\ue001\ue002\ue003", "beta": "\ue011\ue012\ue013"}
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = rng.choice(list(markers))
        words = [word(rng) for _ in range(rng.randint(3, 6))]
        words.insert(rng.randint(0, len(words)), markers[label])
        noise_image(folder / "images" / f"s{seed}_{i}.png", rng)
        rows.append({"image": f"images/s{seed}_{i}.png", "text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


def image_only_rows(folder: Path, n: int, seed: int) -> pd.DataFrame:
    """The label is the square's colour; the text is made-up noise."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = rng.choice(list(COLOURS))
        draw(folder / "images" / f"c{seed}_{i}.png", colour, rng)
        rows.append({"image": f"images/c{seed}_{i}.png", "text": f"{word(rng)} {word(rng)}",
                     "label": colour})
    return pd.DataFrame(rows)


def search(tmp_path: Path, rows: pd.DataFrame, text_col: str = "text", **kwargs) -> AutoSearch:
    rows.to_csv(tmp_path / "train.csv", index=False)
    auto = AutoSearch(config(tmp_path, text_col), TINY, **kwargs)
    auto.fit(tmp_path / "train.csv", run_dir=tmp_path / "run")
    return auto


def quick_preset(time_limit: float, folds: int, fusions: tuple[str, ...] = (), seeds: int = 1
                 ) -> Preset:
    """The smallest real portfolio: Lite0 at 32 px, a tiny n-gram text model, 2 epochs; one
    seed per network unless asked (a second is tested where it is the subject)."""
    return Preset("quick", time_limit,
                  image_encoders=(EncoderConfig("efficientnet-lite0", image_size=32),),
                  text_encoders=(EncoderConfig("ngram", options={"dim": 8, "buckets": 512}),),
                  fusions=fusions, epochs=2, folds=folds, seeds=seeds)


def fits_take(monkeypatch: pytest.MonkeyPatch, seconds: Callable[[int], float]) -> list[int]:
    """A clock that moves only when ``Predictor.fit`` returns: by ``seconds(n)`` after the
    n-th fit (1, 2, ...). Returns the list the fits are counted in."""
    now, calls = [0.0], []
    monkeypatch.setattr(deadline, "clock", lambda: now[0])
    fit = Predictor.fit

    def timed_fit(self, *args, **kwargs):
        fitted = fit(self, *args, **kwargs)
        calls.append(1)
        now[0] += seconds(len(calls))
        return fitted

    monkeypatch.setattr(Predictor, "fit", timed_fit)
    return calls


def scores(auto: AutoSearch) -> dict[str, float]:
    return {r.candidate: r.val_metric for r in auto.leaderboard_ if r.val_metric is not None}


def reads_text_by_ngrams(chosen: Predictor) -> bool:
    """An n-gram text network, or an ensemble that counts an n-gram member."""
    from mmfuse.ensemble.members import LinearMember
    from mmfuse.ensemble.model import EnsembleModel

    def ngram_network(fitted) -> bool:
        model = fitted.config.model
        return "text" in model.modalities and model.text_encoder.name == "ngram"

    fitted = chosen.fitted_
    if isinstance(fitted, EnsembleModel):
        return any((m.view.kind.startswith("tfidf") if isinstance(m, LinearMember)
                    else ngram_network(m.folds[0])) and (fitted.method == "stacking" or w > 0)
                   for m, w in zip(fitted.members, fitted.weights, strict=True))
    return ngram_network(fitted)


def assert_guarantee(auto: AutoSearch) -> None:
    """On validation the choice is at least as good as every single-modality candidate."""
    chosen = scores(auto)[auto.best_name_]
    singles = [r.val_metric for r in auto.leaderboard_ if r.single_modality
               and r.val_metric is not None]
    assert singles and chosen >= max(singles)


@pytest.mark.slow
def test_made_up_script_is_read_by_character_ngrams(tmp_path: Path) -> None:
    auto = search(tmp_path, made_up_script_rows(tmp_path, 240, seed=1))
    board = scores(auto)
    assert board["member: LR on tfidf-char"] >= 0.8
    assert board["member: LR on tfidf-char"] >= board["member: LR on text: minilm"] + 0.3
    assert board["text: minilm"] <= 0.75  # every word is [UNK] to MiniLM's tokenizer
    # The n-gram network alone is left to the TF-IDF members; it still reads the text in a
    # fusion, since n-grams read it best.
    status = {r.candidate: r.describe_status() for r in auto.leaderboard_}
    assert status["text: ngram"] == "skipped: read by the linear members on TF-IDF n-grams"
    assert "concat (efficientnet-lite0 + ngram)" in board
    assert reads_text_by_ngrams(auto.best_)
    assert_guarantee(auto)
    # The run folder is one ordinary model: it loads and predicts like any other.
    test = made_up_script_rows(tmp_path, 100, seed=2)
    loaded = Predictor.load(tmp_path / "run")
    assert loaded.evaluate(test, base_dir=tmp_path)["accuracy"] >= 0.8  # chance: 0.5
    assert read_leaderboard(tmp_path / "run")["rows"][0].chosen


def test_a_pure_noise_modality_is_ignored(tmp_path: Path) -> None:
    auto = search(tmp_path, image_only_rows(tmp_path, 150, seed=3))
    assert_guarantee(auto)
    image_alone = scores(auto)["image: efficientnet-lite0"]
    assert image_alone >= 0.9
    test = image_only_rows(tmp_path, 60, seed=4)
    assert auto.best_.evaluate(test, base_dir=tmp_path)["accuracy"] >= 0.9


def test_when_both_modalities_are_needed_a_fusion_wins(tmp_path: Path) -> None:
    auto = search(tmp_path, make_rows(tmp_path, 240, seed=5), text_col="caption")
    board = scores(auto)
    best_single = max(v for k, v in board.items() if k.startswith(("image:", "text:")))
    assert set(auto.best_.modality_kinds_.values()) == {"image", "text"}
    assert board[auto.best_name_] >= best_single + 0.15
    assert_guarantee(auto)
    # Small single-label data: the ensemble of all candidates stands in for the stack fusion.
    assert "ensemble of all candidates" in board and not any(k.startswith("stack") for k in board)


def test_time_limit_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a clock that moves 0.1 s whenever it is read (the trainer reads it once a step), a
    5 s budget ends the search early: candidates stop at the deadline, the rest are skipped."""
    ticks = iter(range(10**9))
    monkeypatch.setattr(deadline, "clock", lambda: next(ticks) / 10)
    auto = search(tmp_path, image_only_rows(tmp_path, 80, seed=6), time_limit=5)
    statuses = [r.describe_status() for r in auto.leaderboard_]
    assert statuses[0] == "ok" and "skipped: time limit" in statuses
    assert read_leaderboard(tmp_path / "run")["elapsed_s"] <= 5 * 1.1


@pytest.mark.slow
def test_train_without_model_flags_runs_auto_mode_from_the_cli(tmp_path: Path, tiny_csv: Path,
                                                               float32: None) -> None:
    """Trained with defaults, then predicted and exported: the ONNX file, fed the inputs its
    documentation describes, gives what `mmfuse predict` wrote (float32 arithmetic: a CPU's
    bfloat16 text path differs by up to ~5e-4, as ``mmfuse export`` reports)."""
    import numpy as np
    import onnxruntime
    from test_cli import cli

    from mmfuse import load
    from mmfuse.serving.export import graph_for

    run = tmp_path / "run"
    columns = ["--image-col", "image", "--text-col", "caption", "--num-workers", "0"]
    code, output = cli("train", "--data", str(tiny_csv), "--out", str(run), "--preset", "fast",
                       "--time-limit", "120", "--epochs", "4", "--cache-dir", str(tmp_path / "c"),
                       *columns)
    assert code == 0, output
    assert "epochs: 4" in (run / "config.yaml").read_text()  # --epochs caps every candidate
    assert "leaderboard" in output and "chosen" in output
    code, output = cli("leaderboard", str(run))
    assert code == 0 and "chosen" in output
    card = (run / "README.md").read_text()  # the model card names the choice and the board
    chosen = read_leaderboard(run)["rows"][0]
    assert f"**{chosen.candidate}**" in card and f"| {chosen.val_metric:.4f} | yes |" in card
    tried = {r.candidate for r in read_leaderboard(run)["rows"]}
    assert {"image: efficientnet-lite0", "text: minilm", "text: ngram"} <= tried
    code, output = cli("predict", str(run), "--data", str(tiny_csv),
                       "--output", str(tmp_path / "p.csv"))
    assert code == 0, output
    predicted = pd.read_csv(tmp_path / "p.csv")
    assert len(predicted) == 120
    code, output = cli("export", str(run), "--data", str(tiny_csv), "--out",
                       str(tmp_path / "m.onnx"))
    assert code == 0, output
    predictor = load(run)
    rows = predictor.read(tiny_csv, require_labels=False)
    graph = graph_for(predictor, rows)
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    probabilities, labels = session.run(None, {name: tensor.numpy() for name, tensor in zip(
        graph.input_names, graph.inputs(rows), strict=True)})
    expected = predicted[[f"p_{c}" for c in predictor.classes_]].to_numpy()
    assert np.abs(probabilities - expected).max() < 1e-4
    assert labels.tolist() == [predictor.classes_.index(str(p)) for p in predicted["prediction"]]
    code, output = cli("train", "--data", str(tiny_csv), "--out", str(run), "--preset", "fast",
                       "--fusion", "concat", *columns)
    assert code == 2 and "--preset/--time-limit run auto mode" in output
    code, output = cli("leaderboard", str(tmp_path))
    assert code == 2 and "not trained in auto mode" in output


def test_every_preset_names_registered_components() -> None:
    from mmfuse.auto import PRESETS
    from mmfuse.encoders import IMAGE_ENCODERS, TEXT_ENCODERS
    from mmfuse.fusion import FUSIONS

    for preset in PRESETS.values():
        assert set(preset.fusions) <= set(FUSIONS.names()), preset.name
        assert {e.name for e in preset.image_encoders} <= set(IMAGE_ENCODERS.names())
        assert {e.name for e in preset.text_encoders} <= set(TEXT_ENCODERS.names())


def test_fusions_are_regularised_on_small_data_only(tmp_path: Path) -> None:
    """Small data: dropout 0.3 and each modality's own loss (unless DP-SGD, which cannot
    take a second forward pass, or the user asked for more); large data: as configured."""
    from mmfuse.auto import PRESETS
    from mmfuse.auto.portfolio import fusion_candidates

    medium, image, text = PRESETS["medium"], EncoderConfig("efficientnet-lite0"), \
        EncoderConfig("minilm")
    base = config(tmp_path)
    small = fusion_candidates(base, medium, image, text, small_data=True)
    large = fusion_candidates(base, medium, image, text, small_data=False)
    assert [c.config.model.dropout for c in small] == [0.3] * len(medium.fusions)
    assert [c.config.train.unimodal_loss for c in small] == [1.0] * len(medium.fusions)
    assert [(c.config.model.dropout, c.config.train.unimodal_loss) for c in large] == [
        (base.model.dropout, 0.0)] * len(medium.fusions)
    base.model.dropout, base.train.dp_noise_multiplier = 0.5, 1.0
    private = fusion_candidates(base, medium, image, text, small_data=True)[0].config
    assert (private.model.dropout, private.train.unimodal_loss) == (0.5, 0.0)


def test_pretrained_text_encoders_read_the_datas_length() -> None:
    """MiniLM reads the 95th percentile of the token counts (not a fixed 64); an explicit
    length and encoders without a pretrained tokenizer are left alone."""
    from mmfuse.auto.portfolio import PRESETS, suited_to

    texts = ["word " * 100] * 10 + ["short"] * 10  # 102 tokens with [CLS] and [SEP]
    frame = pd.DataFrame({"text": texts})
    data = DataConfig(image_cols=[], text_cols=["text"])
    preset = suited_to(PRESETS["medium"], frame, Config(data=data))
    lengths = {e.name: e.max_length for e in preset.text_encoders}
    assert lengths == {"minilm": 112, "ngram": 64}
    assert suited_to(TINY, frame, Config(data=data)).text_encoders[0].max_length == 16
    # texts that long are too dear to fine-tune MiniLM on in medium's 3 minutes; titles are not
    assert [e.frozen for e in preset.text_encoders] == [None, None]
    titles = pd.DataFrame({"text": ["red leather running shoe, size 42"] * 20})
    short = suited_to(PRESETS["medium"], titles, Config(data=data)).text_encoders
    assert [(e.name, e.frozen, e.max_length) for e in short] == [
        ("minilm", None, 32), ("ngram", None, 64), ("minilm", False, 32)]
    many = pd.DataFrame({"text": ["red leather running shoe, size 42"] * 5001})
    assert [e.frozen for e in suited_to(PRESETS["medium"], many, Config(data=data)).text_encoders
            ] == [None, None]  # a first epoch over that many rows would not fit either


def test_networks_are_judged_on_rows_they_neither_fitted_nor_stopped_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fold's network stops early on an inner split of its training rows and is judged
    on the held-out fold: three sets of rows that never meet; the folds cover every row."""
    events: list[tuple[str, set, set]] = []
    fit, outputs = Predictor.fit, Predictor.outputs

    def spy_fit(self, data, validation=None, **kwargs):
        events.append(("fit", set(data["_row"]), set(validation["_row"])))
        return fit(self, data, validation, **kwargs)

    def spy_outputs(self, rows):
        events.append(("outputs", set(rows["_row"]), set()))
        return outputs(self, rows)

    monkeypatch.setattr(Predictor, "fit", spy_fit)
    monkeypatch.setattr(Predictor, "outputs", spy_outputs)
    quick = quick_preset(120, folds=3, fusions=("concat",), seeds=2)
    rows = image_only_rows(tmp_path, 60, seed=7)
    rows.to_csv(tmp_path / "train.csv", index=False)
    auto = AutoSearch(config(tmp_path), quick)
    auto.fit(tmp_path / "train.csv")
    judged = [(a, b) for a, b in zip(events, events[1:], strict=False)
              if a[0] == "fit" and b[0] == "outputs"]
    # image alone and concat, 3 folds each (the n-gram text network is left to the LR
    # members), and each again with a second seed on the same folds (time is left over)
    assert len(judged) == 2 * 3 * 2
    for (_, fitted, stopped), (_, held, _) in judged:
        assert held and stopped and not (held & fitted) and not (held & stopped)
        assert not (fitted & stopped)
    for candidate in range(4):
        folds = [held for (_, _, _), (_, held, _) in judged[3 * candidate:3 * candidate + 3]]
        assert len(set().union(*folds)) == sum(map(len, folds)) == 60  # each row once
    assert all(r.folds == 3 for r in auto.leaderboard_
               if not r.member and r.val_metric is not None)


def test_a_candidate_cut_short_is_compared_on_the_rows_both_covered() -> None:
    """A candidate that finished one fold, perfect there, does not beat one that is just as
    perfect on that fold and was judged on every fold; better on that fold, it does."""
    import numpy as np

    from mmfuse.auto.judge import Judge
    from mmfuse.tasks import get_task

    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    judge = Judge(get_task("classification"), "accuracy", y, ["a", "b"])
    first_fold = np.arange(5)

    def evidence(predicted: np.ndarray, rows: np.ndarray):
        return judge.evidence_of(rows, np.eye(2)[predicted[rows]], predicted[rows], ["a", "b"])

    full = evidence(np.where(np.arange(10) < 5, y, 1 - y), np.arange(10))  # right on fold 1 only
    lucky = evidence(y, first_fold)
    assert judge.score(full) == 0.5 and judge.score(lucky) == 1.0
    assert not judge.better(lucky, full)  # both perfect on the rows both covered: a tie
    worse_on_fold = evidence(np.where(np.arange(10) < 2, y, 1 - y), np.arange(10))
    assert judge.better(lucky, worse_on_fold)
    # a model fitted on a fold that lacked a class: its columns are put in the judge's order
    only_b = judge.evidence_of(first_fold, np.ones((5, 1)), np.zeros(5, dtype=int), ["b"])
    assert (only_b.decoded[first_fold] == 1).all() and (only_b.scores[first_fold, 0] == 0).all()


def test_a_candidate_judged_on_fewer_rows_must_win_by_more_than_noise() -> None:
    """On a fold of 40 rows, 3 rows that differ (2 won, 1 lost) are within one bootstrap
    standard error of the difference: noise, so the candidate with evidence on every row
    stays. 10 rows won is a win. The same 3 rows from a candidate judged on every row count."""
    import numpy as np

    from mmfuse.auto.judge import Judge
    from mmfuse.tasks import get_task

    y = np.arange(200) % 2
    judge = Judge(get_task("classification"), "accuracy", y, ["a", "b"])
    fold = np.arange(40)

    def evidence(right: np.ndarray, rows: np.ndarray):
        predicted = np.where(right, y, 1 - y)[rows]
        return judge.evidence_of(rows, np.eye(2)[predicted], predicted, ["a", "b"])

    right = np.arange(200) % 10 < 7  # 28 of the fold's 40 rows
    full = evidence(right, np.arange(200))
    slightly = right.copy()
    slightly[[7, 8]], slightly[0] = True, False
    clearly = right.copy()
    clearly[[7, 8, 9, 17, 18, 19, 27, 28, 29, 37]] = True
    assert not judge.better(evidence(slightly, fold), full)
    assert judge.better(evidence(clearly, fold), full)
    assert judge.better(evidence(slightly, np.arange(200)), full)


def test_a_fold_cut_short_by_the_time_limit_does_not_judge(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The first fit "takes" 10 s of a 100 s search, the next ones 100 s: the first fold judges
    the image candidate; the second, stopped by the deadline half-trained, is left out rather
    than dragging it down."""
    from mmfuse.auto import linear

    monkeypatch.setattr(linear, "applies", lambda config: False)  # networks only
    fits_take(monkeypatch, lambda n: 10 if n == 1 else 100)
    image_only_rows(tmp_path, 60, seed=8).to_csv(tmp_path / "train.csv", index=False)
    auto = AutoSearch(config(tmp_path), quick_preset(100, folds=3))
    auto.fit(tmp_path / "train.csv")
    rows = {r.candidate: r for r in auto.leaderboard_}
    assert rows["image: efficientnet-lite0"].folds == 1
    assert rows["text: ngram"].describe_status() == "skipped: time limit"


def test_a_candidate_whose_folds_cannot_all_fit_leaves_its_time_to_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fit "takes" 40 s of a 100 s search with 3 folds: after its first fold the image
    candidate would need 80 s more, so it stops there, and the text candidate still runs
    (fitting a second fold, the image one would have left it no time)."""
    from mmfuse.auto import linear

    monkeypatch.setattr(linear, "applies", lambda config: False)  # networks only
    fits_take(monkeypatch, lambda n: 40)
    image_only_rows(tmp_path, 60, seed=8).to_csv(tmp_path / "train.csv", index=False)
    auto = AutoSearch(config(tmp_path), quick_preset(100, folds=3))
    auto.fit(tmp_path / "train.csv")
    rows = {r.candidate: r for r in auto.leaderboard_}
    assert rows["image: efficientnet-lite0"].folds == 1
    assert rows["text: ngram"].folds == 1 and rows["text: ngram"].describe_status() == "ok"


def test_time_left_repeats_a_faster_network_where_the_best_would_not_fit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image fit "takes" 10 s, a fusion's 2 s, of a 50 s search with 2 folds and two
    seeds: about 24 s are left after both networks, under the 30 s a second image seed may
    need (1.5x its first), so the image network keeps one seed and the fusion, judged worse
    but faster, gets its second."""
    now = [0.0]
    monkeypatch.setattr(deadline, "clock", lambda: now[0])
    fit = Predictor.fit

    def timed_fit(self, *args, **kwargs):
        fitted = fit(self, *args, **kwargs)
        now[0] += 10 if self.config.model.modalities == ["image"] else 2
        return fitted

    monkeypatch.setattr(Predictor, "fit", timed_fit)
    image_only_rows(tmp_path, 60, seed=9).to_csv(tmp_path / "train.csv", index=False)
    auto = AutoSearch(config(tmp_path), quick_preset(50, folds=2, fusions=("concat",), seeds=2))
    auto.fit(tmp_path / "train.csv")
    rows = {r.candidate: r for r in auto.leaderboard_}
    image, fusion = "image: efficientnet-lite0", "concat (efficientnet-lite0 + ngram)"
    assert rows[image].val_metric > rows[fusion].val_metric  # the image network ranks first
    assert rows[f"member: {fusion}, seed 2"].folds == 2
    assert f"member: {image}, seed 2" not in rows


def test_a_fusion_is_not_started_with_under_half_the_time_its_singles_took(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fit "takes" 35 s of 100: after the two single modalities, 26.5 s are left, and
    the fusion, expected to take what both took (70 s), is skipped before it starts instead
    of stopping half-trained."""
    from mmfuse.auto import linear

    monkeypatch.setattr(linear, "applies", lambda config: False)  # networks only
    calls = fits_take(monkeypatch, lambda n: 35)
    image_only_rows(tmp_path, 40, seed=10).to_csv(tmp_path / "train.csv", index=False)
    auto = AutoSearch(config(tmp_path), quick_preset(100, folds=1, fusions=("concat",)))
    auto.fit(tmp_path / "train.csv")
    rows = {r.candidate: r for r in auto.leaderboard_}
    fusion = rows["concat (efficientnet-lite0 + ngram)"]
    assert fusion.describe_status() == "skipped: needs about 70 s, 26 s left to it"
    assert len(calls) == 2  # the singles only (the choice is not refitted on one split)


def test_a_refit_the_time_limit_cut_short_is_not_kept(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The chosen network's refit on the plain split is stopped by the deadline half-trained:
    the first fold's model, the one that was judged, stays the choice."""
    from mmfuse.auto import linear

    monkeypatch.setattr(linear, "applies", lambda config: False)  # networks only
    # two candidates x two folds take 10 s each, then the refit takes 100 s
    calls = fits_take(monkeypatch, lambda n: 10 if n <= 4 else 100)
    image_only_rows(tmp_path, 40, seed=9).to_csv(tmp_path / "train.csv", index=False)
    auto = AutoSearch(config(tmp_path), quick_preset(100, folds=2), keep_candidates=True)
    auto.fit(tmp_path / "train.csv")
    assert len(calls) == 5  # the refit ran, and ran out of time
    assert auto.best_ is auto.candidates_[auto.best_name_]


def test_leaderboard_rows_read_back_as_written_and_as_older_runs_wrote_them() -> None:
    from mmfuse.auto.leaderboard import LeaderboardRow, Status

    row = LeaderboardRow("concat", Status.SKIPPED, "time limit", folds=2,
                         model={"fusion": "concat"})
    assert LeaderboardRow.from_entry(row.entry()) == row
    older = LeaderboardRow.from_entry({"candidate": "member: LR on tfidf-char",
                                       "status": "member (out of fold)", "val_metric": 0.5,
                                       "member": True, "retired_field": 1})
    assert older.status is Status.MEMBER and older.val_metric == 0.5
    assert LeaderboardRow.from_entry({"candidate": "x", "status": "skipped: time limit"}
                                     ).describe_status() == "skipped: time limit"
