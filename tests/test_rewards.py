"""Verifiable rewards on known answers, equivalent forms included."""

from __future__ import annotations

import pytest

from lmpipe.posttrain.rewards import final_answer, reward, verifiable_reward


@pytest.mark.parametrize(
    ("completion", "answer", "want"),
    [
        ("0.5", "1/2", 1.0),
        ("1/2", "0.5", 1.0),
        ("$\\frac{1}{2}$", "0.5", 1.0),
        ("1,000", "1000", 1.0),
        ("1000", "1,000", 1.0),
        ("The boxes hold 3 * 4 = 12 apples.\nSo 5 + 12 = 17 apples.\n#### 17", "17", 1.0),
        ("So 5 + 12 = 17 apples.\n#### 18", "17", 0.0),  # the marked answer counts, not the last number seen
        ("#### 17.0", "17", 1.0),
        ("16", "17", 0.0),
        ("", "17", 0.0),
        ("banana", "17", 0.0),
    ],
)
def test_math_reward(completion, answer, want):
    assert reward("math", completion, answer) == want


@pytest.mark.parametrize(
    ("completion", "answer", "want"),
    [
        ("Braxford", "Braxford", 1.0),
        ("braxford.", "Braxford", 1.0),
        ("The Quyndku", "Quyndku", 1.0),
        ("1,000", "1000", 1.0),
        ("Braxford\nand more text", "Braxford", 1.0),
        ("Braxfordd", "Braxford", 0.0),
        ("Ada", "Ada Lovelace", 0.0),
    ],
)
def test_qa_reward(completion, answer, want):
    assert reward("qa", completion, answer) == want


def test_format_reward_is_case_sensitive():
    assert reward("format", "HARBOUR", "HARBOUR") == 1.0
    assert reward("format", "harbour", "HARBOUR") == 0.0
    assert reward("format", "willow, willow", "willow, willow") == 1.0


def test_trl_signature_and_unknown_kind():
    got = verifiable_reward(
        ["p1", "p2"],
        ["#### 0.5", [{"role": "assistant", "content": "Braxford"}]],
        answer=["1/2", "Braxford"],
        kind=["math", "qa"],
    )
    assert got == [1.0, 1.0]
    assert final_answer("steps\n#### 42\n") == "42"
    with pytest.raises(ValueError, match="no verifiable reward"):
        reward("poetry", "x", "y")
