"""The benchmark record (benchmarks/history.jsonl, written by scripts/bench_all.py) catches a slowdown: the newest
line of each CPU model may not fall more than 15% below the best earlier line of that model on a tracked figure
unless it says why, and README's performance table is the one the record generates."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_all", ROOT / "scripts" / "bench_all.py")
bench_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_all)


def line(cpu: str, commit: str, note: str | None = None, **figures) -> dict:
    out = {"date": "2026-12-02T12:00:00+00:00", "commit": commit * 8, "cpu": cpu, "figures": figures}
    if note:
        out["note"] = note
    return out


def test_the_record_has_no_unexplained_regression():
    history = bench_all.read_history()
    assert history, "benchmarks/history.jsonl is empty: run scripts/bench_all.py"
    for entry in history:
        assert {"date", "commit", "cpu", "figures"} <= set(entry), entry
    assert bench_all.regressions(history) == []


def test_readme_table_is_generated_from_the_record():
    text = (ROOT / "README.md").read_text()
    table = text.split(bench_all.START, 1)[1].split(bench_all.END, 1)[0]
    assert bench_all.START + table + bench_all.END == bench_all.readme_table(bench_all.read_history()), \
        "README's benchmark table is stale: run .venv/bin/python scripts/bench_all.py --readme"


def test_a_fall_of_more_than_15_percent_is_caught_per_cpu_model():
    history = [line("xeon", "a", train_speedup_vs_trl=4.0, demo_bake_s=200.0),
               line("epyc", "a", train_speedup_vs_trl=3.0),
               line("xeon", "b", train_speedup_vs_trl=4.4, demo_bake_s=180.0),
               line("epyc", "b", train_speedup_vs_trl=2.9),  # 3% below its own best: noise
               line("xeon", "c", train_speedup_vs_trl=3.6, demo_bake_s=215.0)]  # 18% below 4.4; 19% slower
    found = bench_all.regressions(history)
    assert len(found) == 2, found
    assert "train_speedup_vs_trl=3.6" in found[0] and "4.4" in found[0]
    assert "demo_bake_s=215" in found[1] and "180" in found[1]
    # the same figures with a reason given pass; a figure missing from the newest line is not judged
    assert bench_all.regressions(history[:-1] + [{**history[-1], "note": "new eval arms: 3 more decodes"}]) == []
    assert bench_all.regressions(history[:-1] + [line("xeon", "c", generate_speedup=6.0)]) == []


def test_the_table_shows_the_newest_figure_of_each_cpu_model_against_its_target():
    history = [line("xeon", "a", train_speedup_vs_trl=4.0, demo_bake_s=200.0),
               line("xeon", "b", demo_bake_s=110.0, demo_data_s=30.0, demo_data_teacher_s=28.0,
                    demo_data_synthesis_s=0.1)]
    table = bench_all.readme_table(history)
    assert "4 ✗ (aaaaaaaa" in table  # the train figure of the older line, since the newer one did not measure it
    assert "110 ✓ (bbbbbbbb" in table
    assert "the demo bake's seconds by stage: data 30 s (teacher 28)" in table


def test_figures_are_read_from_the_benchmarks_key_value_lines():
    out = ("[bench] model=x rows=61 {'steps': 10}\nvs_llamacpp=5.89\n"
           "generate_speedup=7.31 examples_per_s=4.899\n")
    assert bench_all.last_line_figures(out) == {"vs_llamacpp": 5.89, "generate_speedup": 7.31,
                                                "examples_per_s": 4.899}
