"""The provenance page's functions, on inputs with known answers (and one real git checkout)."""

import json
import subprocess
from datetime import datetime, timedelta, timezone

from gravrev.report.provenance import (
    Change,
    changes_summary,
    cpu_model,
    git_revision,
    lock_hashes,
    parse_porcelain,
    pins_table,
    run_date,
    stage_threads,
    stage_times,
    step_time_text,
    uncommitted_changes,
)

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2
"""


def test_cpu_model_prefers_cpuinfo_then_the_processor():
    assert cpu_model(CPUINFO, "x86_64") == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu_model("processor\t: 0\nCPU part\t: 0xd0c\n", "arm") == "arm"
    assert cpu_model("", "") == "unknown"


def test_stage_threads_reports_the_configured_count_not_the_kernels():
    assert stage_threads(1, torch_default=16) == "1 (cpu_threads)"
    assert stage_threads(0, torch_default=16).startswith("16 (torch's default")


def test_run_date_is_utc():
    cest = timezone(timedelta(hours=2))
    assert run_date(datetime(2026, 3, 1, 1, 30, tzinfo=cest)) == "2026-02-28 23:30 UTC"


def test_parse_porcelain_itemises_each_change():
    text = " M gravrev/a.py\nM  staged.py\nMM both.py\n?? new.txt\nR  old.py -> moved.py\n"
    changes = parse_porcelain(text)
    assert [c.path for c in changes] == [
        "gravrev/a.py",
        "staged.py",
        "both.py",
        "new.txt",
        "moved.py",
    ]
    assert [c.meaning for c in changes] == [
        "modified (not staged)",
        "modified (staged)",
        "modified (partly staged)",
        "untracked",
        "renamed (staged)",
    ]
    assert parse_porcelain("") == []


def test_changes_summary_counts_in_words():
    assert changes_summary([]) == "no uncommitted changes"
    assert changes_summary([Change("??", "a")]) == "1 uncommitted change"
    assert changes_summary([Change("??", "a"), Change(" M", "b")]) == "2 uncommitted changes"


def test_lock_hashes_lists_data_not_code():
    lock = {
        "stages": {
            "vrev": {
                "deps": [
                    {"path": "gravrev/interp/direction.py", "md5": "c0de"},
                    {"path": "data/finetune", "md5": "f1.dir"},
                ],
                "outs": [{"path": "data/vrev", "md5": "0ff.dir"}],
            }
        }
    }
    table = lock_hashes(lock)
    assert table.values.tolist() == [
        ["vrev", "deps", "data/finetune", "f1.dir"],
        ["vrev", "outs", "data/vrev", "0ff.dir"],
    ]
    assert lock_hashes({}).empty


def test_stage_times_reads_only_stage_records(tmp_path):
    (tmp_path / "01_history.json").write_text(json.dumps({"stage": "01_history", "seconds": 2.5}))
    (tmp_path / "02_finetune.json").write_text(json.dumps({"stage": "02_finetune", "seconds": 4}))
    (tmp_path / "benchmark.json").write_text(json.dumps([{"what": "steps/s", "value": 1.0}]))
    table = stage_times(tmp_path)
    assert table.values.tolist() == [["01_history", 2.5], ["02_finetune", 4.0]]


def test_pins_table_is_sorted_by_setting():
    table = pins_table({"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2"})
    assert table["setting"].tolist() == ["ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS"]


def git(root, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def test_uncommitted_changes_in_a_real_checkout(tmp_path):
    (tmp_path / "tracked.txt").write_text("committed")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "reference")
    assert uncommitted_changes(tmp_path) == []
    (tmp_path / "tracked.txt").write_text("changed")
    (tmp_path / "notes.txt").write_text("new")
    assert uncommitted_changes(tmp_path) == [Change(" M", "tracked.txt"), Change("??", "notes.txt")]


def test_outside_git_there_are_no_changes(tmp_path):
    assert uncommitted_changes(tmp_path) == []
    assert git_revision(tmp_path).startswith("unknown")


def test_the_step_time_is_phase_h_seconds_over_its_steps(tmp_path):
    assert "not measured" in step_time_text(tmp_path, 1000)
    (tmp_path / "history_phases.json").write_text(
        '{"pretrain": 50.0, "h0_helpful": 30.0, "h0_safe": 9.0, "h1_helpful": 36.0}')
    assert step_time_text(tmp_path, 1000) == "33 ms"
