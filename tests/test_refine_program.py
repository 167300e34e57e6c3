"""The edit-program language of the refine stage: anything outside the vocabulary is rejected with a reason;
valid programs do exactly what they say (expected outputs written out by hand)."""

from __future__ import annotations

import pytest

from lmpipe.refine.program import ProgramError, parse, run_program

DOC = "Home | About\nThe river rises.\nIt flows east.\nClick here!!!\nFooter (c) 2024"


@pytest.mark.parametrize(
    ("program", "reason"),
    [
        ("", "empty program"),
        ("delete_doc()", "unknown operation 'delete_doc'"),
        ("__import__('os').system('rm -rf /')", "unknown operation '__import__'"),
        ("remove_lines(start=1)", "missing argument(s) end"),
        ("remove_lines(start=1, end=2, step=1)", "unknown argument 'step'"),
        ("remove_lines(start='1', end=2)", "expected an integer"),
        ("remove_lines(start=1, start=1, end=2)", "given twice"),
        ("remove_lines(1, 2)", "expected key=value"),
        ("normalize(source=Click, target=x)", "expected a double-quoted string"),
        ('normalize(source="a" target="b")', "unexpected"),
        ("keep_doc()\nremove_lines(start=1, end=1)", "must be the only operation"),
        ('drop_doc(reason="spam")', "unknown argument 'reason'"),
        ("keep_doc(); drop_doc()", "expected key=value"),
        ("remove_lines(start=1, end=1) # ok", "not a call"),
        ("```\nkeep_doc()", "unclosed"),
        ('normalize(source="\\q", target="")', "bad string escape"),
    ],
)
def test_parser_rejects_everything_outside_the_vocabulary(program: str, reason: str) -> None:
    with pytest.raises(ProgramError, match=None) as e:
        run_program(program, DOC)
    assert reason in str(e.value)


@pytest.mark.parametrize(
    ("program", "reason"),
    [
        ("remove_lines(start=0, end=1)", "need 1 <= start <= end <= 5"),
        ("remove_lines(start=3, end=2)", "need 1 <= start <= end <= 5"),
        ("remove_lines(start=4, end=6)", "need 1 <= start <= end <= 5"),
        ('normalize(source="lake", target="sea")', "not in the document"),
        ('normalize(source="", target="x")', "empty source"),
    ],
)
def test_programs_that_do_not_fit_the_document_are_invalid(program: str, reason: str) -> None:
    with pytest.raises(ProgramError) as e:
        run_program(program, DOC)
    assert reason in str(e.value)


def test_only_shown_lines_may_be_removed() -> None:
    with pytest.raises(ProgramError, match="<= 3"):
        run_program("remove_lines(start=4, end=4)", DOC, editable_lines=3)


def test_valid_programs_execute_exactly() -> None:
    assert run_program("keep_doc()", DOC).text == DOC
    dropped = run_program("drop_doc()", DOC)
    assert dropped.text is None and dropped.chars_removed == len(DOC)

    prog = (
        "remove_lines(start=1, end=1)\n"
        "remove_lines(start=4, end=5)\n"
        'normalize(source="river", target="River Ouse")'
    )
    res = run_program(prog, DOC)
    assert res.text == "The River Ouse rises.\nIt flows east."
    # 13 + 13 + 15 chars of lines and 3 newlines gone, 6 chars added by the normalisation
    assert res.chars_removed == len(DOC) - len("The River Ouse rises.\nIt flows east.") == 41 - 6 + 3
    assert dict(res.counts) == {"remove_lines": 2, "lines_removed": 3, "normalize": 1, "replacements": 1}


def test_overlapping_ranges_use_the_original_numbering_and_normalize_replaces_all() -> None:
    text = "a x\nb x\nc x\nd x"
    res = run_program(
        'remove_lines(start=2, end=3)\nremove_lines(start=3, end=3)\nnormalize(source=" x", target="!")', text
    )
    assert res.text == "a!\nd!"
    assert res.counts["lines_removed"] == 2 and res.counts["replacements"] == 2


def test_string_escapes_spaces_and_code_fences() -> None:
    text = 'say "hi"\tnow\n(c) ACME'
    prog = '```\n  normalize( source = "\\"hi\\"\\t" , target="hello " )  \nremove_lines(start=2,end=2)\n```'
    assert [o.name for o in parse(prog)] == ["normalize", "remove_lines"]
    assert run_program(prog, text).text == "say hello now"
