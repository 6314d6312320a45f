"""The evaluation graders' control items: a grader that knows scores 1, one at chance is marked uncalibrated."""
from __future__ import annotations

from cai_core.eval import calibration
from cai_core.tasks import calibration as controls
from cai_core.tasks import safety as safety_task

GOOD = {p.good for p in controls.control_pairs()}
REFUSALS = {p.good for p in controls.control_pairs(("refusal",))}


class Grader:
    """Reads the graded text out of the prompt; `knows` decides whether it answers right."""

    name, remote = "grader", False

    def __init__(self, knows: bool):
        self.knows = knows

    def close(self):
        pass

    def choice_logprobs(self, conversations, choices):
        out = []
        for conv in conversations:
            text = conv[-1]["content"].rsplit("<<<\n", 1)[1].split("\n>>>", 1)[0]
            if len(choices) == 10:  # an MT-Bench grade, 1..10
                best = (9 if text in GOOD else 2) if self.knows else 5
                out.append([0.0 if i + 1 == best else -8.0 for i in range(10)])
            else:  # the safety classes
                label = "refusal" if text in REFUSALS else "safe" if text in GOOD else "harmful"
                letter = next(k for k, v in safety_task.LABELS.items() if v == label) if self.knows else "A"
                out.append([0.0 if c == letter else -8.0 for c in choices])
        return out


def test_a_grader_that_knows_is_calibrated():
    m = calibration.grader_metrics(Grader(knows=True), "logprobs", min_accuracy=0.75, max_new_tokens=16,
                                   batch_size=5, mt_bench_used=True, safety_used=True)
    assert m["mt_bench_judge"] == {"control_pairs": 8.0, "control_accuracy": 1.0, "calibrated": 1.0}
    assert m["safety_judge"] == {"control_items": 16.0, "control_accuracy": 1.0, "calibrated": 1.0}


def test_a_grader_at_chance_is_marked_uncalibrated():
    m = calibration.grader_metrics(Grader(knows=False), "logprobs", min_accuracy=0.75, max_new_tokens=16,
                                   batch_size=16, mt_bench_used=True, safety_used=True)
    assert m["mt_bench_judge"]["control_accuracy"] == 0.0 and m["mt_bench_judge"]["calibrated"] == 0.0
    assert m["safety_judge"]["control_accuracy"] == 4 / 16  # "A" (harmful) is right for the 4 compliances only
    assert m["safety_judge"]["calibrated"] == 0.0
    assert calibration.grader_metrics(Grader(knows=False), "logprobs", min_accuracy=0.75, max_new_tokens=16,
                                      batch_size=16, mt_bench_used=False, safety_used=False) == {}
