"""The mutation check's list (scripts/mutants.txt) cannot rot unseen: `make mutation-check` is not part
of `make test`, so a change that moves a mutant's target text would otherwise be found only by the
next full mutation check. Every mutant must still be plantable: its find text exactly once in its
file, its test files present."""
import os

from scripts.mutation_check import DEFAULT_LIST, parse_mutants
from tests.conftest import ROOT


def test_every_mutant_of_the_list_can_still_be_planted():
    mutants = parse_mutants(DEFAULT_LIST)
    problems = {m.id: m.problem(ROOT) for m in mutants}
    assert len(mutants) > 200 and os.path.samefile(os.path.dirname(DEFAULT_LIST), os.path.join(ROOT, "scripts"))
    assert {k: v for k, v in problems.items() if v} == {}
