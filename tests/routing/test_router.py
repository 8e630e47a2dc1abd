"""The learned router: features, fit, calibration, artifact round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.routing.calibration import calibration_table, cheapest_point, quality_curve, random_share
from gateway.routing.data import LabelledSet
from gateway.routing.features import FeatureSpec, Featurizer, hashed_counts, structure, tokens
from gateway.routing.model import fit_logistic
from gateway.routing.router import Router, expected_gain, needs_strong, train_router

# Only text features here: the tests need no model files, and they stay fast.
TEXT_SPEC = FeatureSpec(kinds=("ngrams", "structure"), hash_dim=256)


def synthetic(n: int = 120) -> LabelledSet:
    """Prompts about proofs need the strong model; greetings do not."""
    rng = np.random.default_rng(7)
    prompts, strong, weak = [], [], []
    for i in range(n):
        hard = i % 2 == 0
        topic = rng.choice(["primes", "groups", "integrals", "graphs"])
        if hard:
            prompts.append(f"Prove the theorem about {topic} number {i} rigorously with a formal proof.")
        else:
            prompts.append(f"Say hello to my friend {topic} {i}, please.")
        strong.append(1.0)
        weak.append(0.0 if hard else 1.0)
    return LabelledSet(prompts, np.array(strong), np.array(weak))


def test_tokens_fold_numbers_and_lowercase() -> None:
    assert tokens("Janet has 16 eggs, $2.50 each!") == ["janet", "has", "<n2>", "eggs", ",", "$", "<n3.>", "each", "!"]


def test_features_are_deterministic_across_calls() -> None:
    prompts = ["What is 12 + 30?", "Write a poem about the sea.\nKeep it short."]
    first = Featurizer.fit(prompts, TEXT_SPEC).transform(prompts)
    second = Featurizer.fit(prompts, TEXT_SPEC).transform(prompts)
    assert np.array_equal(first, second)
    assert hashed_counts(prompts[0], TEXT_SPEC) == hashed_counts(prompts[0], TEXT_SPEC)
    assert np.array_equal(structure(prompts[1]), structure(prompts[1]))


def test_hashed_buckets_do_not_depend_on_the_process_hash_seed() -> None:
    # CRC-32 of "hello": a fixed number, unlike Python's hash() of a str.
    assert hashed_counts("hello", FeatureSpec(kinds=("ngrams",), hash_dim=1 << 16, bigrams=False)) == {0x3610A686 & 0xFFFF: 1.0}


def test_feature_spec_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="feature kinds"):
        FeatureSpec(kinds=("bogus",))


def test_logistic_regression_learns_a_separable_rule() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] - 0.5 * x[:, 2] > 0).astype(float)
    model = fit_logistic(x, y, l2=0.01)
    assert ((model.decision(x) > 0.5) == (y > 0.5)).mean() > 0.97
    assert model.weights[0] > 0 > model.weights[2]


def test_training_learns_the_obvious_rule() -> None:
    data = synthetic()
    router, report = train_router(data, "strong", "weak", TEXT_SPEC, l2=0.1, folds=4)
    # Target 1.0: every hard prompt must go strong (at 0.95 the cheapest cut keeps some weak).
    assert router.decide("Prove the theorem about matrices with a formal proof.", target=1.0).use_strong
    assert not router.decide("Say hello to my friend Ann, please.", target=1.0).use_strong
    # Held out, it finds every prompt that needs the strong model with half the calls.
    assert cheapest_point(report.curve, 1.0).strong_share == pytest.approx(0.5)


def test_calibration_picks_the_least_strong_share_meeting_the_target() -> None:
    # Four prompts: the strong model is needed on the two highest-scored ones only.
    scores = np.array([0.9, 0.7, 0.4, 0.1])
    strong = np.array([1.0, 1.0, 1.0, 1.0])
    weak = np.array([0.0, 0.0, 1.0, 1.0])
    curve = quality_curve(scores, strong, weak)
    assert [(p.strong_share, p.relative_quality) for p in curve] == [
        (0.0, 0.5), (0.25, 0.75), (0.5, 1.0), (0.75, 1.0), (1.0, 1.0)
    ]  # fmt: skip
    point = cheapest_point(curve, 0.95)
    assert (point.strong_share, point.threshold) == (0.5, pytest.approx(0.55))
    table = calibration_table(scores, strong, weak, targets=(0.5, 0.75, 1.0))
    assert {k: v["strong_share"] for k, v in table.items()} == {"0.5": 0.0, "0.75": 0.25, "1": 0.5}
    assert table["0.5"]["threshold"] == 1.0  # never strong


def test_calibration_never_splits_tied_scores() -> None:
    curve = quality_curve(np.array([0.5, 0.5, 0.2]), np.ones(3), np.array([0.0, 1.0, 1.0]))
    assert [p.strong_share for p in curve] == [0.0, pytest.approx(2 / 3), 1.0]


def test_random_routing_share_is_linear_in_the_gap() -> None:
    assert random_share(0.95, strong_quality=0.857, weak_quality=0.638) == pytest.approx(0.8043, abs=1e-3)


def test_router_uses_the_least_calibrated_target_at_or_above_the_request() -> None:
    router, _ = train_router(synthetic(40), "strong", "weak", TEXT_SPEC, l2=0.1, folds=4, targets=(0.9, 0.95, 1.0))
    assert router.threshold_for(0.93)[0] == 0.95
    assert router.threshold_for(0.95)[0] == 0.95
    assert router.threshold_for(1.5)[0] == 1.0


def test_artifact_round_trip_gives_identical_decisions(tmp_path: Path) -> None:
    data = synthetic()
    router, _ = train_router(data, "strong", "weak", TEXT_SPEC, l2=0.1, folds=3)
    router.save(tmp_path / "router")
    loaded = Router.load(tmp_path / "router")
    assert loaded.meta == router.meta
    probes = [*data.prompts[:10], "Prove it.", "", "Hello!" * 500]
    for prompt in probes:
        for target in (0.8, 0.95, 1.0):
            assert loaded.decide(prompt, target) == router.decide(prompt, target)


def test_loading_something_else_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is not a router artifact: it needs router\.json and model\.npz"):
        Router.load(tmp_path)


def test_expected_gain_label_ranks_by_the_strong_models_gain() -> None:
    right_wrong = LabelledSet(["a", "b", "c", "d"], np.array([1.0, 1.0, 0.0, 0.0]), np.array([0.0, 1.0, 1.0, 0.0]))
    assert expected_gain(right_wrong).tolist() == [1.0, 0.5, 0.0, 0.5]
    assert needs_strong(right_wrong).tolist() == [1.0, 0.0, 0.0, 0.0]
    judged = LabelledSet(["a", "b"], np.array([10.0, 4.0]), np.array([1.0, 7.0]))  # span 9
    assert expected_gain(judged).tolist() == [1.0, pytest.approx(1 / 3)]
    same = LabelledSet(["a", "b"], np.ones(2), np.ones(2))
    assert expected_gain(same).tolist() == [0.5, 0.5]


def test_training_records_the_label_and_keeps_the_hard_one_available() -> None:
    data = synthetic()
    soft, _ = train_router(data, "strong", "weak", TEXT_SPEC, l2=0.1, folds=4)
    hard, _ = train_router(data, "strong", "weak", TEXT_SPEC, l2=0.1, folds=4, label="needs_strong")
    assert soft.meta["model"]["label_kind"] == "expected_gain"
    assert hard.meta["model"]["label_kind"] == "needs_strong"
    for router in (soft, hard):
        assert router.decide("Prove the theorem about matrices with a formal proof.", target=1.0).use_strong
        assert not router.decide("Say hello to my friend Ann, please.", target=1.0).use_strong
    with pytest.raises(ValueError, match="label must be one of"):
        train_router(data, "strong", "weak", TEXT_SPEC, folds=4, label="bogus")
