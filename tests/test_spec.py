"""Spec texts: ``spec.normalise`` is the one text that ``run``'s labels and every filter compare by."""

import json

import pytest

from reinv_bench.registry.spec import matches, normalise

SMOKE = ["--budget", "smoke", "--arch", "tiny", "--eval-arch", "tiny", "--metric", "attack_acc", "--quiet"]


@pytest.mark.parametrize(
    "text, normal",
    [
        ("re[p=.5]", "re[p=0.5]"),
        ("re[p=0.50]", "re[p=0.5]"),
        (" re[ p = .5 ] ", "re[p=0.5]"),
        ("re[scale=.1-.80,p=.5]", "re[p=0.5,scale=0.1-0.8]"),  # keys sorted, both ends of a range
        ("re[value=0.40/.4/0.4]", "re[value=0.4/0.4/0.4]"),
        ("mid[beta=1e-3]", "mid[beta=0.001]"),
        ("re[p=1.0]", "re[p=1]"),
        ("none+re", "re"),  # none is the identity of a composition
        ("lomma+gmi[iters=300]", "lomma+gmi[iters=300]"),
        ("mid[beta=.001|.01]", "mid[beta=0.001|0.01]"),
        ("x[a=-1,b=foo-bar]", "x[a=-1,b=foo-bar]"),  # text is left as it is
        ("CelebA/FFHQ 64px", "CelebA/FFHQ 64px"),  # not a spec: as given
    ],
)
def test_normalise(text, normal):
    assert normalise(text) == normal
    assert normalise(normal) == normal  # idempotent


def test_matches_compares_normalised_texts():
    assert matches("re[p=0.5]", ("re[p=.5]",))
    assert matches("re[p=0.5,scale=0.1-0.8]", ("re[scale=0.1-0.8,p=.50]",))
    assert not matches("re[p=0.5]", ("re",))
    assert not matches("re", ("re[p=0.5]",))


def test_leaderboard_filter_finds_the_row_run_stored_from_the_same_text(registry, invoke, tmp_path):
    """``run -d "re[p=.5]"`` stores the label ``re[p=0.5]``; ``leaderboard -d "re[p=.5]"`` finds it
    (before ``normalise`` the filter compared the raw text and found nothing)."""
    wd = tmp_path / "w"
    invoke("run", "-a", "meanimg", "-d", "re[p=.5]", *SMOKE, "--workdir", wd, registry=registry, ok=True)
    rows = json.loads(
        invoke(
            "leaderboard", "--workdir", wd, "--format", "json", "-d", "re[p=.5]", registry=registry, ok=True
        ).output
    )
    assert [e["defense"] for e in rows] == ["re[p=0.5]"]
    for text in ("re[ p=0.50 ]", "none+re[p=.5]"):
        out = invoke(
            "leaderboard", "--workdir", wd, "--format", "json", "-d", text, registry=registry, ok=True
        )
        assert [e["defense"] for e in json.loads(out.output)] == ["re[p=0.5]"]
    miss = invoke("leaderboard", "--workdir", wd, "--format", "json", "-d", "re[p=.4]", registry=registry)
    assert miss.exit_code != 0 and "no successful results match" in miss.output
