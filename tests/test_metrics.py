import pytest

from ssmp_infer.metrics import TrailerScore, levenshtein, order_agreement, score_trailer, summarise

PRED = [3, 7, 10, 2]
TRUTH = [2, 3, 5, 7, 9]


def test_exact_matching_by_hand():
    s = score_trailer(PRED, TRUTH)
    # predicted 3, 7, 2 are true shots, 10 is not; true 5 and 9 were missed
    assert s.precision == pytest.approx(3 / 4)
    assert s.recall == pytest.approx(3 / 5)
    assert s.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)


def test_tolerance_widens_the_match_by_hand():
    s = score_trailer(PRED, TRUTH, tolerance=1)
    # 10 is within 1 of 9; 5 is still 2 away from its nearest prediction (3 and 7)
    assert s.precision == pytest.approx(1.0)
    assert s.recall == pytest.approx(4 / 5)
    assert s.f1 == pytest.approx(2 * 0.8 / 1.8)


def test_no_overlap_is_zero_not_nan():
    s = score_trailer([0, 1], [5, 6])
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    assert s.aa is None


@pytest.mark.parametrize(
    "a, b, distance",
    [
        ([1, 2, 3], [1, 2, 3], 0),
        ([1, 2, 3], [1, 3], 1),  # one deletion
        ([1, 2, 3], [3, 2, 1], 2),  # two substitutions
        ([], [4, 5], 2),
        ([5, 1, 2, 3], [1, 2, 3, 4], 2),  # drop the head, append a tail
        ([7, 8, 9, 10, 11, 12], [6, 8, 9, 10, 13, 11, 12], 2),  # substitution + insertion
    ],
)
def test_levenshtein_by_hand(a, b, distance):
    assert levenshtein(a, b) == distance
    assert levenshtein(b, a) == distance


def test_order_agreement_by_hand():
    # hits in predicted order: 3 (true slot 1), 7 (slot 3), 2 (slot 0) -> pairs (1,3) yes, (1,0) no, (3,0) no
    assert order_agreement(PRED, TRUTH) == pytest.approx(1 / 3)
    assert score_trailer(PRED, TRUTH).aa == pytest.approx(1 / 3)
    assert order_agreement([2, 5, 9], TRUTH) == 1.0
    assert order_agreement([9, 5, 2], TRUTH) == 0.0


def test_order_agreement_with_tolerance_matches_one_to_one():
    # the matching: 4 -> 3 (slot 1; 3 is the earlier of 3 and 5), 8 -> 7 (slot 3), 10 -> 9 (slot 4)
    assert order_agreement([10, 4, 8], TRUTH, tolerance=1) == pytest.approx(1 / 3)
    # two predictions near the same true shot: only one of them is matched to it
    assert order_agreement([4, 5], [5], tolerance=1) is None


def test_order_agreement_undefined_below_two_hits():
    assert order_agreement([3], TRUTH) is None
    assert order_agreement([3, 100], TRUTH) is None


def test_summarise_means_over_movies_and_skips_undefined_aa():
    scores = [TrailerScore(1.0, 0.5, 2 / 3, 2, 1.0), TrailerScore(0.0, 0.0, 0.0, 4, None), TrailerScore(0.5, 0.5, 0.5, 3, 0.5)]
    summary = summarise(scores)
    assert summary["precision"] == pytest.approx(0.5)
    assert summary["recall"] == pytest.approx(1 / 3)
    assert summary["f1"] == pytest.approx((2 / 3 + 0.5) / 3)
    assert summary["ld"] == pytest.approx(3.0)
    assert summary["aa"] == pytest.approx(0.75) and summary["aa_movies"] == 2
    assert summary["movies"] == 3
    assert summarise([TrailerScore(0, 0, 0, 1, None)])["aa"] is None


def test_empty_prediction_is_refused():
    with pytest.raises(ValueError):
        score_trailer([], TRUTH)
