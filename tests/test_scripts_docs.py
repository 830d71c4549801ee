"""scripts/_docs.py: a script rewrites only its own figures in a doc, never the prose around them."""

from __future__ import annotations

import pytest

from tests.conftest import script_module


def _docs():
    return script_module("_docs")


def test_a_block_is_rewritten_in_place_and_the_prose_and_other_blocks_stay(tmp_path):
    docs, doc = _docs(), tmp_path / "quality.md"
    (a_begin, a_end), (more_begin, more_end) = docs.block_marks("scripts/a.py"), docs.block_marks("scripts/a.py: more")
    around = ["# Title", "", "Prose before.", "", "{a}", "", "Prose between, by hand.", "", more_begin, "a's second block",
              more_end, "", "Prose after.", ""]
    doc.write_text("\n".join(around).format(a=f"{a_begin}\n| a | 1 |\n{a_end}"))

    docs.write_block(doc, "scripts/a.py", "| a | 2 |")

    assert doc.read_text() == "\n".join(around).format(a=f"{a_begin}\n| a | 2 |\n{a_end}")


def test_a_block_not_in_the_doc_yet_is_added_at_its_end(tmp_path):
    docs, doc = _docs(), tmp_path / "new.md"
    docs.write_block(doc, "scripts/b.py", "figures")
    assert doc.read_text() == "\n".join(docs.block_marks("scripts/b.py")).replace("\n", "\nfigures\n") + "\n"
    doc.write_text("Hand-written.\n")
    docs.write_block(doc, "scripts/b.py", "figures")
    assert doc.read_text().startswith("Hand-written.\n\n<!-- scripts/b.py: generated")


def test_a_block_whose_end_mark_was_deleted_is_refused_and_the_doc_left_as_it_was(tmp_path):
    docs, doc = _docs(), tmp_path / "quality.md"
    begin, _ = docs.block_marks("scripts/a.py")
    doc.write_text(f"{begin}\nold figures\nProse someone wrote after them.\n")
    with pytest.raises(SystemExit, match="without its"):
        docs.write_block(doc, "scripts/a.py", "new figures")
    assert doc.read_text() == f"{begin}\nold figures\nProse someone wrote after them.\n"
