"""Mutation score of the core modules, with cosmic-ray: the killed share per module and overall.

Each module is mutated by cosmic-ray (`pip install cosmic-ray`; 8.x works with Python 3.11) and tested with its
own test files only (MODULES below), so one module's run stays within a benchmark's time. cosmic-ray edits the
file it mutates in place, so everything runs in a private copy of the tree (a temporary directory, or --work):
the working tree is never touched, and others can go on testing it meanwhile.

    nice -n 10 python benchmarks/mutation_score.py cai_core/stages/gate.py
    nice -n 10 python benchmarks/mutation_score.py --all            # every module of MODULES (hours)
    nice -n 10 python benchmarks/mutation_score.py --all --sample 40 # 40 random mutants a module: an estimate
    python benchmarks/mutation_score.py --list

Output: per module `killed/total (share)`, the surviving mutants (operator, line) and, last,
``mutation_score_overall: <killed>/<total> (<share>)``. A mutant counts as killed when its test command
fails or times out; an incompetent mutant (the module no longer imports) counts as killed too, as cosmic-ray
counts it. Surviving mutants must be read: some are equivalent (no test can tell them apart). Mutants inside
annotations of a module with `from __future__ import annotations` are equivalent by construction (nothing
evaluates them): they are marked skipped before the run and left out of the counts.
"""
from __future__ import annotations

import argparse
import ast
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: module -> the test files that are its own (the tree mirrors the source).
MODULES: dict[str, tuple[str, ...]] = {
    "cai_core/runtime/engine.py": ("tests/runtime/test_runtime.py", "tests/runtime/test_step_reuse.py",
                                   "tests/runtime/test_engine_units.py"),
    "cai_core/cleaning/rule.py": ("tests/cleaning/test_rule_clean.py", "tests/cleaning/test_far_repeat.py",
                                  "tests/cleaning/test_independent_corpus.py", "tests/cleaning/test_rule_units.py"),
    "cai_core/cleaning/verify.py": ("tests/cleaning/test_verifier.py", "tests/cleaning/test_verify_units.py",
                                    "tests/cleaning/test_verify_more.py"),
    "cai_core/metrics/repetition.py": ("tests/metrics/test_repetition.py", "tests/metrics/test_repetition_units.py"),
    "cai_core/metrics/detectors/analysis.py": ("tests/metrics/test_detectors.py", "tests/cleaning/test_far_repeat.py",
                                               "tests/metrics/test_analysis_units.py",
                                               "tests/metrics/test_analysis_findings.py"),
    "cai_core/stages/judge.py": ("tests/tasks/test_judge.py", "tests/stages/test_conversations.py",
                                 "tests/stages/test_judge_stage.py"),
    "cai_core/stages/gate.py": ("tests/stages/test_gate.py", "tests/stages/test_gate_thresholds.py",
                                "tests/stages/test_gate_config.py"),
    "cai_core/stages/revise.py": ("tests/tasks/test_revise.py", "tests/stages/test_conversations.py",
                                  "tests/stages/test_revise_stage.py"),
    "cai_core/stages/clean.py": ("tests/cleaning/test_llm_clean.py", "tests/stages/test_conversations.py",
                                 "tests/stages/test_clean_stage_llm.py", "tests/stages/test_clean_stage_units.py"),
    "cai_core/llm/journal.py": ("tests/llm/test_journal.py", "tests/llm/test_journal_signal.py",
                                "tests/llm/test_journal_records.py"),
    "cai_core/stages/report.py": ("tests/stages/test_report_front.py", "tests/stages/test_report_values.py",
                                  "tests/stages/test_report_rounds.py", "tests/stages/test_report_sections.py"),
}

#: What the private copy needs: the package, the tests and their data, the benchmarks some tests import.
COPIED = ("cai_core", "tests", "benchmarks", "pyproject.toml")


def _copy_tree(work: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(src, work / name)


def _config(module: str, tests: tuple[str, ...], timeout_s: float) -> str:
    command = (f"{sys.executable} -m pytest -x -q -p no:cacheprovider --no-header "
               f"-m 'not slow and not s3 and not gpu' {' '.join(tests)}")
    return (f'[cosmic-ray]\nmodule-path = "{module}"\ntimeout = {timeout_s}\nexcluded-modules = []\n'
            f'test-command = "{command}"\n\n[cosmic-ray.distributor]\nname = "local"\n')


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """((row, col), (end row, end col)) of every annotation in `source`, when the module has
    `from __future__ import annotations`: such annotations are strings that nothing evaluates (the package never
    calls get_type_hints), so a mutant inside one (`int | None` -> `int + None`) is equivalent by construction."""
    tree = ast.parse(source)
    if not any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
               any(a.name == "annotations" for a in n.names) for n in tree.body):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            found += [x.annotation for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]
                      if x is not None and x.annotation is not None]
            found += [node.returns] if node.returns is not None else []
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
    return [((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)) for n in found]


def _skip_annotation_mutants(module: Path, session: Path) -> int:
    """Mark the mutants inside annotations (see annotation_spans) SKIPPED before `cosmic-ray exec`: they are
    neither run nor counted. Returns how many."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = annotation_spans(module.read_text())
    skipped = 0
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            for spec in item.mutations:
                start = (spec.start_pos[0], spec.start_pos[1])
                if any(lo <= start and (spec.end_pos[0], spec.end_pos[1]) <= hi for lo, hi in spans):
                    db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED,
                                                          output="equivalent: inside an unevaluated annotation"))
                    skipped += 1
                    break
    return skipped


def draw(items, keep: int, seed: int) -> set[str]:
    """The job ids of `keep` of cosmic-ray's work items, drawn at random with `seed`. The ids are fresh uuids at
    every init, so the items are ordered by what each mutant is (position, operator, occurrence): one seed, one
    sample."""
    import random

    ordered = sorted(items, key=lambda item: [(tuple(m.start_pos), tuple(m.end_pos), m.operator_name, m.occurrence)
                                              for m in item.mutations])
    ids = [item.job_id for item in ordered]
    return set(random.Random(seed).sample(ids, min(keep, len(ids))))


def _sample_mutants(session: Path, keep: int, seed: int) -> int:
    """Leave `keep` pending mutants, drawn at random (seeded), and mark the others SKIPPED: a sampled score, for
    a module whose every mutant would take hours. Returns how many were left out."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        pending = [item.job_id for item in db.pending_work_items]
        left_out = set(pending) - draw(db.pending_work_items, keep, seed)
        for job_id in sorted(left_out):
            db.set_result(job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="not sampled"))
    return len(left_out)


def wilson_interval(killed: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a killed share measured on a random sample of `total` mutants."""
    if total == 0:
        return 0.0, 1.0
    p = killed / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * ((p * (1 - p) / total + z * z / (4 * total * total)) ** 0.5) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def _results(session: Path) -> tuple[int, int, list[tuple[str, int, str]]]:
    """(killed, total, surviving [(operator, line, occurrence)]) from a cosmic-ray session database; the mutants
    marked SKIPPED (inside annotations) are not counted."""
    db = sqlite3.connect(session)
    rows = db.execute(
        "SELECT s.operator_name, s.start_pos_row, s.occurrence, r.test_outcome, r.worker_outcome "
        "FROM mutation_specs s JOIN work_results r ON r.job_id = s.job_id").fetchall()
    db.close()
    rows = [r for r in rows if r[4] != "SKIPPED"]
    surviving = [(op.split("/", 1)[-1], line, str(occ)) for op, line, occ, test, worker in rows
                 if worker == "NORMAL" and test == "SURVIVED"]
    return len(rows) - len(surviving), len(rows), sorted(surviving, key=lambda s: (s[1], s[0]))


def run_module(module: str, tests: tuple[str, ...], work: Path, timeout_s: float, sample: int = 0,
               seed: int = 0) -> tuple[int, int, list]:
    name = module.replace("/", "_").removesuffix(".py")
    cfg, session = work / f"{name}.toml", work / f"{name}.sqlite"
    cfg.write_text(_config(module, tests, timeout_s))
    session.unlink(missing_ok=True)
    for step in (["cosmic-ray", "init", str(cfg), str(session)], ["cosmic-ray", "exec", str(cfg), str(session)]):
        if step[1] == "exec":
            skipped = _skip_annotation_mutants(work / module, session)
            print(f"{module}: {skipped} mutants inside annotations skipped (equivalent)", flush=True)
            if sample:
                left_out = _sample_mutants(session, sample, seed)
                print(f"{module}: a random sample of {sample} mutants (seed {seed}); {left_out} not run", flush=True)
        proc = subprocess.run(step, cwd=work, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(step)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return _results(session)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="modules (paths) to mutate; default: none (see --all)")
    ap.add_argument("--all", action="store_true", help="every module of MODULES")
    ap.add_argument("--list", action="store_true", help="print MODULES and exit")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant's test run (then: killed)")
    ap.add_argument("--sample", type=int, default=0,
                    help="run only this many mutants per module, drawn at random (0 = all); the score is then an "
                         "estimate, printed with its 95%% interval")
    ap.add_argument("--seed", type=int, default=0, help="the sample's seed")
    ap.add_argument("--work", help="keep the private copy and the session databases here (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.list:
        for module, tests in MODULES.items():
            print(f"{module}: {' '.join(tests)}")
        return 0
    if shutil.which("cosmic-ray") is None:
        print("cosmic-ray is not installed: pip install cosmic-ray", file=sys.stderr)
        return 2
    modules = list(MODULES) if args.all else args.modules
    unknown = [m for m in modules if m not in MODULES]
    if unknown or not modules:
        print(f"unknown or no modules {unknown}; known: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cai-mutation-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        _copy_tree(work)
        killed_all = total_all = 0
        for module in modules:
            start = time.monotonic()
            killed, total, surviving = run_module(module, MODULES[module], work, args.timeout, args.sample, args.seed)
            killed_all, total_all = killed_all + killed, total_all + total
            share = killed / total if total else 1.0
            interval = " (95%% interval %.1f%%-%.1f%%)" % tuple(100 * x for x in wilson_interval(killed, total))
            print(f"{module}: {killed}/{total} killed ({share:.1%}){interval if args.sample else ''} in "
                  f"{time.monotonic() - start:.0f} s; tests: {' '.join(MODULES[module])}", flush=True)
            for op, line, occ in surviving:
                print(f"  survived: line {line}: {op} (occurrence {occ})")
        share = killed_all / total_all if total_all else 1.0
        print(f"mutation_score_overall: {killed_all}/{total_all} ({share:.1%})"
              + (" sampled, 95%% interval %.1f%%-%.1f%%" % tuple(100 * x for x in wilson_interval(killed_all, total_all))
                 if args.sample else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
