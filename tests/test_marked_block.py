"""The generated block between two marker lines of a hand-written page."""

import pytest

from torch_impl.marked_block import read_block, replace_block

BEGIN, END = "<!-- begin -->", "<!-- end -->"


def test_replace_writes_only_between_the_markers_and_says_whether_it_changed(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"prose\n\n{BEGIN}\n| old |\n| rows |\n{END}\n\nmore prose\n")
    assert read_block(page, BEGIN, END) == "| old |\n| rows |"
    assert replace_block(page, BEGIN, END, "| new |")
    assert page.read_text() == f"prose\n\n{BEGIN}\n| new |\n{END}\n\nmore prose\n"
    assert not replace_block(page, BEGIN, END, "| new |")
    assert list(tmp_path.iterdir()) == [page], "no temporary file is left beside the page"


@pytest.mark.parametrize("text", [f"{BEGIN}\n| rows |\n", f"| rows |\n{END}\n", f"{END}\n| rows |\n{BEGIN}\n", ""])
def test_a_page_without_both_markers_in_order_is_an_error_and_stays_as_it_was(tmp_path, text):
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(ValueError, match="markers"):
        replace_block(page, BEGIN, END, "| new |")
    with pytest.raises(ValueError, match="markers"):
        read_block(page, BEGIN, END)
    assert page.read_text() == text
