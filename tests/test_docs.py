"""The docs name the tests behind their claims (docs/reliability.md has one per fault): every
test they name exists, so a renamed or deleted test cannot leave a claim without its proof."""

from __future__ import annotations

import re

import pytest
from fixtures import ROOT

DOCS = ["README.md", *(str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("docs/*.md"))),
        "benchmarks/README.md", "sweeps/README.md", "experiments/ablations/README.md",
        "experiments/sim2real.md", "experiments/smoke/README.md"]
DEFINED = {name for path in ROOT.glob("tests/**/*.py")
           for name in re.findall(r"^\s*def (test_\w+)", path.read_text(), re.M)}


def cited(text: str) -> set[str]:
    """Test names in a doc: ``test_x``, ``test_x[param]``, ``test_x_...`` (a family); not
    keyword arguments such as ``test_size=0.2``."""
    return set(re.findall(r"\b(test_\w+?)(?:_\.\.\.|\b)(?!=)", text))


@pytest.mark.parametrize("doc", DOCS)
def test_every_test_a_doc_names_exists(doc):
    missing = []
    for name in sorted(cited((ROOT / doc).read_text())):
        module = (ROOT / "tests" / f"{name}.py").is_file() or (
            ROOT / "tests" / "benchmarks" / f"{name}.py").is_file()
        family = any(d.startswith(name + "_") for d in DEFINED)
        if name not in DEFINED and not module and not family:
            missing.append(name)
    assert not missing, f"{doc} names tests that do not exist: {missing}"


def test_the_check_finds_a_missing_test():
    assert cited("`test_a_thing[x]`, `test_family_...`, `split(test_size=0.2)`") == {
        "test_a_thing", "test_family"}
    assert "test_no_such_test_anywhere" not in DEFINED
