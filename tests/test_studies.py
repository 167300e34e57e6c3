"""Study files, their validation, and the statistics (intervals checked against hand-computed values and SciPy)."""

import math
from pathlib import Path

import pytest
import yaml

from lmpipe.studies.spec import StudyError, check_key, load_study
from lmpipe.studies.stats import interval, paired_differences, standardized, verdict
from tests.conftest import ROOT

SMOKE = yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text())


def write_study(tmp_path: Path, body: dict, name: str = "s") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_smoke_study_loads():
    s = load_study("smoke", ROOT)
    assert s.control == "default" and s.seeds == [1, 2]
    o = s.overrides("tiny_lr", 2)
    assert (
        o["train.lr"] == 1e-5 and o["train.seed"] == 2 and o["train.max_steps"] == 16
    )  # profile + arm + seed
    assert s.exp_name("tiny_lr", 2) != s.exp_name("default", 2) != s.exp_name("default", 1)


def test_every_committed_study_validates():
    for path in sorted((ROOT / "studies").glob("*.yaml")):
        load_study(path, ROOT)


@pytest.mark.parametrize(
    "key, problem",
    [
        ("train.lr", None),
        ("mixture.weights.web", None),  # free-form mapping: any domain name
        ("filter.select.domains.prose.c4.min_sentences", None),  # through dict[str, RuleSet] and an Optional
        ("train.lrr", "unknown key 'lrr' in train"),
        ("train.lr.x", "train.lr is a value"),
        ("nosuch.x", "unknown key 'nosuch' in <root>"),
        ("filter.select.domains.prose.c4.nope", "unknown key 'nope' in filter.select.domains.prose.c4"),
    ],
)
def test_check_key_against_params_schema(key, problem):
    got = check_key(key)
    assert (got is None) if problem is None else (problem in got)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda b: b["arms"]["tiny_lr"]["params"].update({"train.lrr": 1}),
            "arms.tiny_lr.params.train.lrr: unknown key 'lrr' in train (allowed: ",
        ),
        (
            lambda b: b["arms"]["tiny_lr"].update(params={"train": {"lr": -1.0}}),
            "train.lr: Input should be greater than 0",
        ),
        (
            lambda b: b["metrics"].update(bad={"path": "pretrain.no_such_key"}),
            "metrics.bad.path: no key 'no_such_key'",
        ),
        (
            lambda b: b["metrics"].update(bad={"path": "evaluate.models"}),
            "metrics.bad.path: metrics/evaluate.json is not written by 'pretrain' or its upstream stages",
        ),
        (
            lambda b: b["claims"][0].update(expect="tiny_lr > nobody"),
            "claims[0].expect: 'nobody' is not an arm",
        ),
        (lambda b: b["claims"][0].update(expect="tiny_lr"), "names no ordering of arms"),
        (lambda b: b["claims"][0].update(metric="loss"), "claims[0].metric: unknown metric 'loss'"),
        (lambda b: b["arms"]["tiny_lr"].update(control=True), "exactly one arm needs control: true"),
        (lambda b: b.update(target="nostage"), "target: 'nostage' is not a stage"),
        (lambda b: b.update(profile="nosuch"), "profile: "),
        (lambda b: b["arms"].update({"Bad Name": {}}), "arm names must match"),
        (lambda b: b.update(seed_param="train.sead"), "seed_param: train.sead: unknown key 'sead'"),
        (  # params.yaml pretrains on the tune stage's winner: these weights would never be read
            lambda b: b["arms"]["tiny_lr"]["params"].update({"mixture.weights": {"prose": 1.0}}),
            "arms.tiny_lr (with profile and study params): sets mixture.weights.prose but mixture.from_tune "
            "is true, so it has no effect",
        ),
    ],
)
def test_invalid_study_fails_with_yaml_path(tmp_path, edit, message):
    body = yaml.safe_load(yaml.safe_dump(SMOKE))
    edit(body)
    with pytest.raises(StudyError) as err:
        load_study(write_study(tmp_path, body), ROOT)
    assert message in str(err.value) and str(tmp_path / "s.yaml") in str(err.value)


def test_shadowed_weights_depend_on_where_the_switch_is_set(tmp_path):
    body = yaml.safe_load(yaml.safe_dump(SMOKE))
    body["params"] = {"mixture.from_tune": False}  # the study turns the switch off: every arm's weights count
    body["arms"]["tiny_lr"]["params"].update({"mixture.weights": {"prose": 1.0}})
    load_study(write_study(tmp_path, body), ROOT)
    # an arm that turns it back on next to weights of its own would silently drop them
    body["arms"]["tiny_lr"]["params"]["mixture.from_tune"] = True
    with pytest.raises(StudyError, match=r"arms\.tiny_lr .* sets mixture\.weights\.prose but"):
        load_study(write_study(tmp_path, body), ROOT)
    # an arm that turns it on with no weights of its own means to leave the study's unused (study g's tuned arm)
    body["params"]["mixture.weights"] = body["arms"]["tiny_lr"]["params"].pop("mixture.weights")
    load_study(write_study(tmp_path, body), ROOT)


def test_t_interval_hand_computed():
    # mean 3, s = sqrt(2.5), t(0.975, 4) = 2.776445105 (tables) → half-width 2.776445105 * sqrt(2.5 / 5)
    iv = interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776445105 * math.sqrt(0.5)
    assert iv.mean == 3.0 and iv.n == 5
    assert iv.lo == pytest.approx(3 - half, abs=1e-8) and iv.hi == pytest.approx(3 + half, abs=1e-8)
    # two seeds: t(0.975, 1) = 12.70620474; values 0.5, 0.7 → s = 0.141421356, se = 0.1
    iv2 = interval([0.5, 0.7])
    assert (iv2.lo, iv2.hi) == pytest.approx((0.6 - 1.270620474, 0.6 + 1.270620474), abs=1e-8)
    assert interval([4.2]).lo is None  # one seed: no interval


def test_paired_interval_matches_scipy():
    from scipy import stats

    a = {1: 2.31, 2: 2.27, 3: 2.35, 4: 2.30}
    b = {1: 2.41, 2: 2.33, 3: 2.44, 4: 2.36, 5: 9.9}  # seed 5 has no partner: dropped from the pairing
    d = paired_differences(a, b)
    assert list(d) == [1, 2, 3, 4]
    iv = interval(list(d.values()))
    ref = stats.ttest_rel([a[s] for s in d], [b[s] for s in d]).confidence_interval(0.95)
    assert (iv.lo, iv.hi) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert verdict(iv, "<") == "holds" and verdict(iv, ">") == "contradicted"
    assert standardized(iv) == pytest.approx(iv.mean / iv.sd)


def test_verdict_inconclusive_when_interval_spans_zero():
    iv = interval([-0.1, 0.2, 0.05])
    assert iv.lo < 0 < iv.hi
    assert verdict(iv, "<") == verdict(iv, ">") == "inconclusive"
    assert verdict(interval([0.3]), ">") == "inconclusive"


def test_bootstrap_interval_is_within_range_and_reproducible():
    x = [1.0, 1.2, 0.9, 1.4, 1.1, 1.3]
    b1, b2 = interval(x, "bootstrap"), interval(x, "bootstrap")
    assert (b1.lo, b1.hi) == (b2.lo, b2.hi)
    assert min(x) <= b1.lo < sum(x) / len(x) < b1.hi <= max(x)
    t = interval(x)
    assert (
        b1.hi - b1.lo < t.hi - t.lo
    )  # the percentile bootstrap is narrower at small n (why t is the default)


def _result(label, means, kinds):
    return {
        "study": "x",
        "label": label,
        "metrics": {m: {"kind": k} for m, k in kinds.items()},
        "arms": {a: {"metrics": {m: {"mean": v} for m, v in ms.items()}} for a, ms in means.items()},
    }


def test_scale_transfer_decision_accuracy():
    from lmpipe.studies.transfer import decision_accuracy

    kinds = {"loss": "continuous", "acc": "accuracy"}
    # 3 arms → 3 pairs. loss: small order a<b<c, large a<c<b → pairs (a,b) agree, (a,c) agree, (b,c) flip = 2/3
    small = _result(
        "x.small",
        {"a": {"loss": 1.0, "acc": 0.3}, "b": {"loss": 2.0, "acc": 0.3}, "c": {"loss": 3.0, "acc": 0.5}},
        kinds,
    )
    large = _result(
        "x",
        {"a": {"loss": 0.5, "acc": 0.2}, "b": {"loss": 1.5, "acc": 0.4}, "c": {"loss": 1.0, "acc": 0.6}},
        kinds,
    )
    r = decision_accuracy(small, large)
    assert r["metrics"]["loss"] == {"kind": "continuous", "pairs": 3, "accuracy": pytest.approx(2 / 3)}
    # acc: (a,b) tie at the small scale → skipped; (a,c) agree; (b,c) agree → 2/2
    assert r["metrics"]["acc"] == {"kind": "accuracy", "pairs": 2, "accuracy": 1.0}
    assert r["by_kind"]["continuous"]["accuracy"] == pytest.approx(2 / 3)


def test_set_args_round_trip_through_dvc(tmp_path):
    """The -S strings the runner passes, applied by DVC's own Hydra override code, give the intended params:
    types kept (a string '1234' stays a string), keys params.yaml lacks added, lists and nulls as values."""
    from dvc.utils.hydra import apply_overrides

    from lmpipe.studies.experiments import set_args
    from lmpipe.studies.spec import set_dotted

    base = {
        "train": {"lr": 0.003, "seed": None, "schedule": {"kind": "cosine"}},
        "mixture": {"weights": {"prose": 0.3}},
        "name": "x",
    }
    overrides = {
        "train.lr": 1e-5,
        "train.seed": 7,
        "train.schedule.kind": "wsd",
        "mixture.weights.web": 0.2,
        "evaluate.old_domains": ["prose", "code"],
        "name": "1234",
        "train.betas": [0.9, 0.95],
        "filter.select.default.c4": None,
        "dedup.exact": False,
        "llm.base_url": "http://h:1/v1?a='b'",
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(base))
    args = set_args(overrides, base)
    apply_overrides(path, [a for a in args if a != "-S"])
    expected = yaml.safe_load(yaml.safe_dump(base))
    for k, v in overrides.items():
        set_dotted(expected, k, v)
    # read as DVC reads it (YAML 1.2: ruamel writes 1e-05, which PyYAML's YAML 1.1 would take for a string;
    # the stages still get a float because the typed Params coerce it)
    from ruamel.yaml import YAML

    assert YAML(typ="safe").load(path.read_text()) == expected


def test_new_key_metric_is_not_looked_up_in_the_reference_run(tmp_path):
    # a metric written by code newer than the committed metrics/*.json: declared, so not an error
    body = yaml.safe_load(yaml.safe_dump(SMOKE))
    body["metrics"]["fresh"] = {"path": "pretrain.loss_by_new_code.prose", "new_key": True}
    load_study(write_study(tmp_path, body), ROOT)
    body["metrics"]["fresh"]["new_key"] = False
    with pytest.raises(StudyError, match="metrics.fresh.path: no key 'loss_by_new_code'"):
        load_study(write_study(tmp_path, body), ROOT)
