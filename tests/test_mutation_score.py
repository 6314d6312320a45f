"""benchmarks/mutation_score.py's own logic: which mutants are equivalent by construction, and the interval of a
sampled score."""
from __future__ import annotations

import pytest

from benchmarks.mutation_score import annotation_spans, wilson_interval

SOURCE = '''from __future__ import annotations
x: int | None = None
def f(a: list[int], *rest: str, k: dict[str, int] | None = None) -> tuple[int, ...]:
    return (a[0] | 1,)
'''


def test_annotations_are_found_only_where_nothing_evaluates_them():
    spans = annotation_spans(SOURCE)
    lines = SOURCE.splitlines()
    texts = sorted(lines[r0 - 1][c0:c1] for (r0, c0), (r1, c1) in spans)
    assert texts == sorted(["int | None", "list[int]", "str", "dict[str, int] | None", "tuple[int, ...]"])
    assert all(r0 != 4 for (r0, _), _ in spans)  # `a[0] | 1` in the body is real code
    assert annotation_spans(SOURCE.replace("from __future__ import annotations\n", "")) == []


def test_the_interval_contains_the_sampled_share_and_narrows_with_the_sample():
    lo, hi = wilson_interval(34, 40)
    assert lo < 34 / 40 < hi and 0.7 < lo and hi < 0.95
    lo2, hi2 = wilson_interval(340, 400)
    assert lo < lo2 < 0.85 < hi2 < hi
    assert wilson_interval(40, 40)[1] == pytest.approx(1.0) and wilson_interval(40, 40)[0] > 0.9
    assert wilson_interval(0, 0) == (0.0, 1.0)



def test_one_seed_draws_one_sample_whatever_the_job_ids():
    """cosmic-ray gives every mutant a fresh uuid at each init: the sample must follow the mutants, not the ids."""
    import uuid
    from types import SimpleNamespace

    from benchmarks.mutation_score import draw

    mutants = [((row, col), (row, col + 1), op, occ) for row in range(1, 9) for col in (4, 9)
               for op, occ in (("core/NumberReplacer", row), ("core/AddNot", 0))]

    def init():  # what `cosmic-ray init` makes: one item per mutant, each under a new uuid
        items = [SimpleNamespace(job_id=uuid.uuid4().hex, mutations=[SimpleNamespace(
            start_pos=start, end_pos=end, operator_name=op, occurrence=occ)]) for start, end, op, occ in mutants]
        return items, {item.job_id: item.mutations[0].start_pos + (item.mutations[0].operator_name,) for item in items}

    (one, what_one), (two, what_two) = init(), init()
    drawn_one, drawn_two = draw(one, 5, seed=3), draw(reversed(two), 5, seed=3)
    assert len(drawn_one) == 5 and not drawn_one & drawn_two  # other ids...
    assert sorted(what_one[i] for i in drawn_one) == sorted(what_two[i] for i in drawn_two)  # ...the same mutants
    assert sorted(what_one[i] for i in draw(one, 5, seed=4)) != sorted(what_one[i] for i in drawn_one)
