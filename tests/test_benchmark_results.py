"""Every committed benchmark result says where it ran (issue 13): the machine in the JSON, a line under the
table."""

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
FIELDS = ("cpu_model", "cpu_capability", "bf16_native", "torch_threads", "torch")


def _machines(payload: dict) -> list[dict]:
    if "machine" in payload:
        return [payload["machine"]]
    return [v["machine"] for v in payload.get("variants", [])]  # demo_search: one run per variant


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.stem)
def test_each_result_names_its_machine(path):
    machines = _machines(json.loads(path.read_text()))
    assert machines, f"{path.name}: no 'machine' (expected {FIELDS})"
    for m in machines:
        missing = [f for f in FIELDS if f not in m]
        assert not missing, f"{path.name}: machine lacks {missing}"
    md = path.with_suffix(".md")
    lines = md.read_text().splitlines() if md.is_file() else []
    assert any(line.startswith("Machine") for line in lines), f"{md.name}: no 'Machine' line under the table"


def test_the_machine_helper_records_every_field():
    from vlaforge.benchmarking import machine, machine_line

    m = machine(precision="fp32")
    assert all(f in m for f in FIELDS) and m["precision"] == "fp32" and "kind" in m
    line = machine_line(m)
    assert line.startswith("Machine: ") and m["cpu_capability"] in line and "Precision: fp32" in line
