"""Staleness weightings: FedAsync's and FedBuff's rules, pinned."""

import pytest

from fedstream import ConfigError
from fedstream.rounds.staleness import StalenessRule, staleness_weight


def test_the_three_rules_give_the_papers_factors():
    polynomial = StalenessRule("polynomial", exponent=0.5)
    assert [staleness_weight(s, polynomial) for s in (0, 1, 3, 8)] == pytest.approx(
        [1.0, 2**-0.5, 0.5, 1 / 3]
    )
    hinge = StalenessRule("hinge", hinge_a=10.0, hinge_b=4)
    assert [staleness_weight(s, hinge) for s in (0, 4, 5, 7)] == pytest.approx(
        [1.0, 1.0, 1 / 11, 1 / 31]
    )
    constant = StalenessRule("constant")
    assert {staleness_weight(s, constant) for s in range(20)} == {1.0}
    # exponent 0 makes the polynomial rule constant
    assert staleness_weight(9, StalenessRule("polynomial", exponent=0.0)) == 1.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "linear"}, r"^staleness='linear' is invalid: expected one of \['constant', "),
        (
            {"exponent": -1.0},
            r"^staleness_exponent=-1\.0 is invalid: expected a finite num",
        ),
        ({"hinge_b": -2}, r"^staleness_hinge_b=-2 is invalid: expected an integer >= 0"),
    ],
)
def test_bad_rules_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        StalenessRule(**changes)


def test_a_negative_staleness_is_refused():
    with pytest.raises(ConfigError, match=r"^staleness=-1 is invalid: expected an integer >= 0"):
        staleness_weight(-1, StalenessRule())
