import json

from longllava.cli import main


def test_bench_scan_prints_kernel_and_torch_figures(capsys):
    assert main(["bench", "scan", "--tokens", "96,40", "--channels", "16", "--d-state", "4", "--repeats", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["tokens"] for r in rows] == [96, 40]
    for row in rows:
        for key in ("kernel_forward_ms", "torch_forward_ms", "kernel_train_ms", "torch_train_ms"):
            assert row[key] > 0, key
        assert row["train_speedup"] == round(row["torch_train_ms"] / row["kernel_train_ms"], 2)


def test_bench_scan_table_and_bad_input(capsys):
    assert main(["bench", "scan", "--tokens", "32", "--channels", "8", "--d-state", "2", "--repeats", "1"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("| tokens |") and "| 32 | 8 x 2 |" in table
    assert main(["bench", "scan", "--tokens", "32,x"]) == 2
    assert "--tokens" in capsys.readouterr().err
    assert main(["bench", "scan", "--tokens", "0"]) == 2
