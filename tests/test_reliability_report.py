"""scripts/reliability_report.py sums what the reliability tests logged (tests/conftest.py `reliability_log`):
counts add up, the slowest refusal is the largest time logged, and the report fails on any lost file, any bad input
that did not exit 2, a slow refusal, or too few bad inputs. scripts/test.sh prints its last line after a run."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reliability_report", ROOT / "scripts" / "reliability_report.py")
reliability_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reliability_report)


def write_log(path: Path, bad_inputs: int = 80, exit_2: int = 80, slowest: float = 0.6, deleted: int = 0) -> Path:
    records = [{"kind": "faults_injected", "count": 12}, {"kind": "user_files_deleted", "count": deleted},
               {"kind": "late_refusals", "count": 2}, {"kind": "slowest_late_refusal_s", "count": 9.5, "how": "max"}]
    records += [{"kind": "bad_inputs", "count": 1} for _ in range(bad_inputs)]
    records += [{"kind": "bad_inputs_exit_2", "count": 1} for _ in range(exit_2)]
    records += [{"kind": "slowest_refusal_s", "count": s, "how": "max"} for s in (0.3, slowest, 0.4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_last_line_sums_counts_and_keeps_the_slowest_refusal(tmp_path, capsys):
    assert reliability_report.main(["--log", str(write_log(tmp_path / "log.jsonl"))]) == 0
    first, last = capsys.readouterr().out.splitlines()
    assert first == "checks passed"
    assert last == ("faults_injected=12 bad_inputs=80 bad_inputs_exit_2=80 slowest_refusal_s=0.6 late_refusals=2 "
                    "slowest_late_refusal_s=9.5 user_files_deleted=0 secrets_found=0 rows_lost=0 "
                    "bake_kill_points_identical=0")


@pytest.mark.parametrize("figures, problem", [
    ({"bad_inputs": 79, "exit_2": 79}, "only 79 bad inputs tried (< 80)"),
    ({"exit_2": 79}, "1 bad inputs did not exit 2"),
    ({"slowest": 2.4}, "a refusal took 2.4 s (>= 2.0 s)"),
    ({"deleted": 1}, "user_files_deleted=1"),
])
def test_the_report_fails_below_its_bar(tmp_path, capsys, figures, problem):
    assert reliability_report.main(["--log", str(write_log(tmp_path / "log.jsonl", **figures))]) == 1
    assert problem in capsys.readouterr().out.splitlines()[0]
