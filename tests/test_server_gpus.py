"""GPU detection over a stub nvidia-smi first on PATH: counts, busy GPUs, failures, CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

from pathlib import Path

import pytest
from stubs.server_helpers import no_smi, use_stub_smi

from twinkle_auto.server.gpus import GPU, apply_visible_devices, detect_gpus, parse_nvidia_smi_csv


@pytest.mark.parametrize("count", [1, 2, 8])
def test_counts(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    use_stub_smi(monkeypatch, gpus=count)
    report = detect_gpus()
    assert [g.index for g in report.gpus] == list(range(count))
    assert report.reason is None
    assert report.gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert report.gpus[0].memory_total_mb == 81559
    assert len(report.free) == count


def test_zero_gpus_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    use_stub_smi(monkeypatch, gpus=0)
    report = detect_gpus()
    assert report.gpus == ()
    assert "No devices were found" in (report.reason or "")


def test_absent_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_smi(monkeypatch, tmp_path)
    report = detect_gpus()
    assert report.gpus == () and "not found" in (report.reason or "")


def test_failing_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    msg = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    use_stub_smi(monkeypatch, gpus=4, fail=msg)
    report = detect_gpus()
    assert report.gpus == ()
    assert report.reason == f"nvidia-smi failed (exit 9): {msg}"


def test_busy_gpus_are_reported_not_free(monkeypatch: pytest.MonkeyPatch) -> None:
    use_stub_smi(monkeypatch, gpus=4, busy="1,2")
    report = detect_gpus()
    assert [g.index for g in report.free] == [0, 3]
    assert [g.index for g in report.busy] == [1, 2]
    assert report.as_dict()["busy"] == [1, 2]


@pytest.mark.parametrize(
    ("visible", "expected", "reason"),
    [
        ("1,3", [1, 3], None),
        ("3,0", [3, 0], None),  # CUDA's order is the variable's order
        ("2,9,3", [2], None),  # CUDA stops at the first entry it cannot resolve
        ("", [], "empty string"),
        ("7", [], "names none"),
        ("GPU-00000002", [2], None),  # UUID prefixes are resolved with a second query
    ],
)
def test_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch, visible: str, expected: list[int], reason: str | None
) -> None:
    use_stub_smi(monkeypatch, gpus=4, visible=visible)
    report = detect_gpus()
    assert [g.index for g in report.gpus] == expected
    if reason:
        assert reason in (report.reason or "")
    else:
        assert report.reason is None
    assert report.visible_devices == visible
    assert set(report.hidden) == set(range(4)) - set(expected)


def test_parse_odd_lines() -> None:
    text = "0, NVIDIA A100-SXM4-80GB, 81920, 5, 0\n1, Weird, Name, GPU, [N/A], [N/A], [Not Supported]\n\n"
    gpus = parse_nvidia_smi_csv(text)
    assert gpus[0] == GPU(0, "NVIDIA A100-SXM4-80GB", 81920, 5, 0)
    assert gpus[1].name == "Weird, Name, GPU" and gpus[1].memory_total_mb is None and not gpus[1].busy
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        parse_nvidia_smi_csv("Failed to initialize NVML: Driver/library version mismatch")


def test_apply_visible_devices_unset_keeps_all() -> None:
    gpus = [GPU(i, "g", 1, 0, 0) for i in range(2)]
    assert apply_visible_devices(gpus, None) == (gpus, None)
