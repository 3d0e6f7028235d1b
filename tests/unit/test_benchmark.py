"""The benchmark still runs against the program and the test helpers it uses (figures are not judged)."""

from __future__ import annotations

import benchmarks.mock_scaling as benchmark


def test_the_benchmark_prints_one_row_per_worker_count(monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "WORKER_COUNTS", (1, 2))
    monkeypatch.setattr(benchmark, "REPEATS", 1)
    benchmark.main()
    header, *rows = capsys.readouterr().out.splitlines()
    assert "longest chain" in header
    assert [row.split()[0] for row in rows] == ["1", "2"]
    resources = [int(row.split()[2]) for row in rows]
    assert resources[1] > resources[0], rows
