"""Structured edits: line ranges, fuzzy anchors, indentation, and answers in every accepted form."""

from __future__ import annotations

import json

import pytest

from twinkle_auto.monitor.edits import (
    Edit,
    EditPlan,
    apply_answer,
    apply_edits,
    edit_plan_schema,
    locate_anchor,
)
from twinkle_auto.monitor.patching import PatchError

SCRIPT = """\
import torch

from twinkle_auto.runtime import TrainingRuntime

rt = TrainingRuntime()
x = torch.randn(8, 4)
w = torch.zeros(4, 2, requires_grad=True)
for step in range(10):
    y = x @ w.t()
    loss = y.pow(2).mean()
    loss.backward()
    rt.log_metrics(step=step, loss=loss.item())
rt.finish()
"""
LINES = SCRIPT.splitlines()


def plan(*edits: Edit, summary: str = "fix") -> EditPlan:
    return EditPlan(summary=summary, edits=list(edits))


def test_line_range_edit_replaces_those_lines() -> None:
    new = apply_edits(SCRIPT, plan(Edit(start_line=9, end_line=9, replacement="    y = x @ w")))
    assert new == SCRIPT.replace("    y = x @ w.t()\n", "    y = x @ w\n")


def test_replacement_indentation_follows_the_replaced_block() -> None:
    # The model dropped the loop indentation, and kept the inner structure of its new lines.
    new = apply_edits(SCRIPT, plan(Edit(start_line=9, end_line=9, replacement="if True:\n    y = x @ w")))
    assert "    if True:\n        y = x @ w\n    loss" in new


def test_insertion_before_a_line() -> None:
    new = apply_edits(SCRIPT, plan(Edit(start_line=8, end_line=7, replacement="torch.manual_seed(0)")))
    assert "w = torch.zeros(4, 2, requires_grad=True)\ntorch.manual_seed(0)\nfor step" in new


def test_empty_replacement_deletes() -> None:
    new = apply_edits(SCRIPT, plan(Edit(start_line=1, end_line=2, replacement="")))
    assert new.startswith("from twinkle_auto")


def test_several_edits_use_original_line_numbers() -> None:
    new = apply_edits(
        SCRIPT,
        plan(
            Edit(start_line=6, end_line=6, replacement="x = torch.randn(8, 4)\nx = x.float()"),
            Edit(start_line=9, end_line=9, replacement="    y = x @ w"),
        ),
    )
    assert "x = x.float()\nw = torch.zeros" in new
    assert "    y = x @ w\n" in new


def test_overlapping_edits_are_refused() -> None:
    with pytest.raises(PatchError, match=r"^edits 1 and 2 overlap"):
        apply_edits(
            SCRIPT,
            plan(
                Edit(start_line=9, end_line=10, replacement="    y = x @ w\n    loss = y.mean()"),
                Edit(start_line=10, end_line=10, replacement="    loss = y.sum()"),
            ),
        )


def test_out_of_range_lines_are_refused_with_the_script_size() -> None:
    with pytest.raises(PatchError, match=r"edit 1: start_line 40 is outside the script \(lines 1-13\)"):
        apply_edits(SCRIPT, plan(Edit(start_line=40, end_line=40, replacement="x")))


def test_edit_that_changes_nothing_is_refused() -> None:
    with pytest.raises(PatchError, match="change nothing"):
        apply_edits(SCRIPT, plan(Edit(start_line=9, end_line=9, replacement="    y = x @ w.t()")))


def test_edit_without_place_is_refused() -> None:
    with pytest.raises(PatchError, match="neither start_line/end_line nor an anchor"):
        apply_edits(SCRIPT, plan(Edit(replacement="x = 1")))


# ------------------------------------------------------------------------------------ fuzzy anchors
def test_anchor_only_edit_with_other_whitespace() -> None:
    new = apply_edits(
        SCRIPT, plan(Edit(anchor="y  =  x @ w.t( )".replace("( )", "()"), replacement="y = x @ w"))
    )
    assert "    y = x @ w\n" in new


def test_near_match_anchor_is_accepted() -> None:
    # One character off (a typo the model made while copying) still places the edit.
    assert locate_anchor(LINES, "loss = y.pow(2).mean( )") == (9, 9)
    new = apply_edits(SCRIPT, plan(Edit(anchor="    y = x @ w.T()", replacement="    y = x @ w")))
    assert "    y = x @ w\n" in new


def test_anchor_copied_with_excerpt_numbers() -> None:
    assert locate_anchor(LINES, "   9 |     y = x @ w.t()\n  10 |     loss = y.pow(2).mean()") == (8, 9)


def test_ambiguous_anchor_is_refused_naming_both_lines() -> None:
    script = "a = 1\nprint(a)\nb = 2\nprint(a)\n"
    with pytest.raises(PatchError) as info:
        apply_edits(script, plan(Edit(anchor="print(a)", replacement="print(a, b)")))
    assert "matches lines 2 and 4" in str(info.value)
    assert "\n" not in str(info.value)


def test_ambiguous_near_matches_are_refused() -> None:
    script = "total = compute(a, b)\nother = 1\ntotal = compute(a, c)\n"
    with pytest.raises(PatchError, match=r"matches lines 1 and 3 about equally"):
        locate_anchor(script.splitlines(), "total = compute(a, d)")


def test_missing_anchor_names_the_closest_lines() -> None:
    with pytest.raises(PatchError) as info:
        apply_edits(SCRIPT, plan(Edit(anchor="z = model(batch)", replacement="z = 1")))
    message = str(info.value)
    assert message.startswith('edit 1: anchor "z = model(batch)" is not in the script; closest: line ')
    assert "% similar" in message


def test_wrong_line_numbers_are_corrected_by_the_anchor() -> None:
    # The model said lines 8-8 but quoted line 10: the anchor is trusted.
    new = apply_edits(
        SCRIPT,
        plan(Edit(start_line=8, end_line=8, anchor="loss = y.pow(2).mean()", replacement="loss = y.sum()")),
    )
    assert "    loss = y.sum()\n" in new
    assert "for step in range(10):\n" in new


def test_anchor_repeated_elsewhere_is_placed_by_the_line_numbers() -> None:
    script = "def f(a):\n    print(a)\n" + "x = 1\n" * 30 + "def g(a):\n    print(a)\n"
    new = apply_edits(
        script, plan(Edit(start_line=34, end_line=34, anchor="print(a)", replacement="print(a * 2)"))
    )
    assert new.endswith("def g(a):\n    print(a * 2)\n")
    assert new.startswith("def f(a):\n    print(a)\n")


def test_line_numbers_and_an_anchor_that_is_nowhere_are_refused() -> None:
    with pytest.raises(PatchError, match=r"^edit 1: anchor .* is not in the script; closest: .*; line 9 is "):
        apply_edits(
            SCRIPT, plan(Edit(start_line=9, end_line=9, anchor="completely different", replacement="x"))
        )


# ---------------------------------------------------------------------------------------- answer forms
def test_schema_requires_every_field() -> None:
    schema = edit_plan_schema()
    assert schema["required"] == ["summary", "edits"]
    assert set(schema["properties"]["edits"]["items"]["required"]) == {
        "start_line",
        "end_line",
        "anchor",
        "replacement",
    }
    json.dumps(schema)  # serialisable as a response_format


def test_answer_as_plan_dict_and_json_text() -> None:
    data = {
        "summary": "Multiply by w, which is already (4, 2).",
        "edits": [
            {"start_line": 9, "end_line": 9, "anchor": "    y = x @ w.t()", "replacement": "    y = x @ w"}
        ],
    }
    expected = SCRIPT.replace("w.t()", "w")
    assert apply_answer(SCRIPT, EditPlan.model_validate(data)) == (expected, data["summary"])
    assert apply_answer(SCRIPT, data) == (expected, data["summary"])
    assert apply_answer(SCRIPT, json.dumps(data)) == (expected, data["summary"])
    fenced = "Here is the fix:\n```json\n" + json.dumps(data, indent=2) + "\n```\n"
    assert apply_answer(SCRIPT, fenced) == (expected, data["summary"])


def test_answer_with_search_replace_fallback() -> None:
    answer = "Use w directly.\n<<<<<<< SEARCH\n    y = x @ w.t()\n=======\n    y = x @ w\n>>>>>>> REPLACE\n"
    assert apply_answer(SCRIPT, answer) == (SCRIPT.replace("w.t()", "w"), "Use w directly.")


def test_answer_with_unified_diff_fallback() -> None:
    answer = "```diff\n@@ -9,1 +9,1 @@\n-    y = x @ w.t()\n+    y = x @ w\n```"
    assert apply_answer(SCRIPT, answer)[0] == SCRIPT.replace("w.t()", "w")


def test_invalid_plan_names_the_field() -> None:
    with pytest.raises(PatchError, match=r"not a valid edit plan: edits\.0\.replacement"):
        apply_answer(SCRIPT, {"summary": "x", "edits": [{"start_line": 9}]})


def test_broken_json_says_where() -> None:
    with pytest.raises(PatchError, match="JSON does not parse"):
        apply_answer(SCRIPT, '{"summary": "x", "edits": [{"start_line": 9,,}]}')


def test_prose_only_answer_is_refused_with_the_format() -> None:
    with pytest.raises(PatchError, match=r"^no edit plan found in the answer: reply with JSON"):
        apply_answer(SCRIPT, "Try a smaller learning rate.")


def test_original_script_is_untouched_on_failure() -> None:
    original = str(SCRIPT)
    with pytest.raises(PatchError):
        apply_edits(
            SCRIPT,
            plan(Edit(start_line=9, end_line=9, replacement="y"), Edit(anchor="nope nope", replacement="z")),
        )
    assert original == SCRIPT


def test_lost_indentation_after_a_faithful_first_line_is_restored() -> None:
    # "replace a line with itself plus the new lines", the new line typed without the loop's indent
    new = apply_edits(
        SCRIPT,
        plan(Edit(start_line=10, end_line=10, replacement="    loss = y.pow(2).mean()\nloss = loss * 1.0")),
    )
    assert "    loss = y.pow(2).mean()\n    loss = loss * 1.0\n    loss.backward()" in new


def test_deeper_block_keeps_its_structure() -> None:
    new = apply_edits(
        SCRIPT,
        plan(Edit(start_line=9, end_line=9, replacement="        if True:\n            y = x @ w")),
    )
    assert "    if True:\n        y = x @ w\n" in new


def test_an_anchor_copied_without_the_lines_comment_still_matches() -> None:
    lines = [
        "W = torch.randn(2, 6)  # (out, in) like nn.Linear",
        "b = torch.zeros(2)",
        'label = "#1"  # a hash inside a string is code',
    ]
    assert locate_anchor(lines, "W = torch.randn(2, 6)") == (0, 0)
    assert locate_anchor(lines, 'label = "#1"') == (2, 2)
    with pytest.raises(PatchError):
        locate_anchor(lines, 'label = "')  # the string's hash is not a comment: no cut inside strings
