"""Run ids, atomic merged meta.json writes, archive numbering: the shared run-folder format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twinkle_auto.runtime import format as fmt


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "run"
    f.mkdir()
    return f


@pytest.mark.parametrize("good", ["run1", "grpo-qwen_3.5", "A.b-c_d", "x" * 128])
def test_valid_run_ids(good: str) -> None:
    assert fmt.validate_run_id(good) == good


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("../x", "invalid run id"),
        ("..", "invalid run id"),
        ("a/b", "invalid run id"),
        ("a..b", ".."),
        (".hidden", "start with '.'"),
        ("auto", "reserved"),
        ("AUTO", "reserved"),
        ("", "empty"),
        ("a b", "invalid run id"),
        ("x" * 129, "at most 128"),
        ("run\n1", "invalid run id"),
    ],
)
def test_invalid_run_ids_are_refused_with_a_reason(bad: str, why: str) -> None:
    with pytest.raises(fmt.RunIdError, match=None) as info:
        fmt.validate_run_id(bad)
    assert why in str(info.value)
    assert "\n" not in str(info.value).replace(repr(bad), "")


def test_update_meta_merges_nested_fields_and_never_drops_one(folder: Path) -> None:
    fmt.update_meta(folder, {"run_id": "r", "script_path": "/x/train.py", "progress": {"last_step": 7}})
    fmt.update_meta(folder, {"status": "running", "progress": {"total_steps": 10}})
    meta = json.loads((folder / "meta.json").read_text())
    assert meta == {
        "run_id": "r",
        "script_path": "/x/train.py",
        "status": "running",
        "progress": {"last_step": 7, "total_steps": 10},
    }


def test_corrupt_meta_is_kept_aside_not_lost(folder: Path) -> None:
    (folder / "meta.json").write_text('{"run_id": "r", "stat')
    meta = fmt.update_meta(folder, {"status": "paused"})
    assert meta == {"status": "paused"}
    assert (folder / "meta.json.corrupt").read_text() == '{"run_id": "r", "stat'


def test_read_json_file_errors_are_one_line(folder: Path) -> None:
    (folder / "meta.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        fmt.read_json_file(folder / "meta.json")
    (folder / "meta.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match="not UTF-8"):
        fmt.read_json_file(folder / "meta.json")


def test_atomic_write_leaves_no_temp_file(folder: Path) -> None:
    fmt.atomic_write_json(folder / "meta.json", {"a": 1})
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json"]


def test_archived_versions_and_current_version(folder: Path) -> None:
    for name in ("train.py", "train_v1.py", "train_v3.py", "train_vx.py", "train_v2.txt"):
        (folder / name).write_text("")
    assert fmt.archived_versions(folder) == [1, 3]
    assert fmt.current_version(folder) == 4
    assert fmt.archived_versions(folder / "missing") == []


def test_process_create_time_matches_psutil() -> None:
    import os

    import psutil

    mine = fmt.process_create_time(os.getpid())
    assert mine is not None
    assert abs(mine - psutil.Process().create_time()) < 0.05
