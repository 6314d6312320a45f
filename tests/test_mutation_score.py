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


def test_one_seed_draws_one_sample_whatever_the_job_ids(tmp_path):
    """cosmic-ray gives every mutant a fresh uuid at each init: the sample must follow the mutants, not the ids."""
    import shutil
    import sqlite3
    import subprocess

    from benchmarks.mutation_score import _config, _sample_mutants

    (tmp_path / "m.py").write_text("def f(a, b):\n    if a > b and a - 1 < 3:\n        return a * 2 + b\n"
                                   "    return [a, b, 0, 1, 2][a % 5]\n")
    (tmp_path / "m.toml").write_text(_config("m.py", ("t.py",), 5))
    drawn = []
    for name in ("one", "two"):
        session = tmp_path / f"{name}.sqlite"
        subprocess.run([shutil.which("cosmic-ray") or "cosmic-ray", "init", "m.toml", str(session)], cwd=tmp_path,
                       check=True, capture_output=True)
        assert _sample_mutants(session, 5, seed=3) > 0
        db = sqlite3.connect(session)
        ids = {r[0] for r in db.execute("SELECT job_id FROM mutation_specs")}
        pending = db.execute("SELECT s.operator_name, s.start_pos_row, s.start_pos_col, s.occurrence FROM "
                             "mutation_specs s WHERE s.job_id NOT IN (SELECT job_id FROM work_results)").fetchall()
        db.close()
        drawn.append((ids, sorted(pending)))
    assert not drawn[0][0] & drawn[1][0]  # other ids...
    assert len(drawn[0][1]) == 5 and drawn[0][1] == drawn[1][1]  # ...the same five mutants
