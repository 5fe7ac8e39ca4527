"""README is the front door: short, and every page it moved to docs/ is linked and exists, with working links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("development.md", "paper_notes.md", "networks.md", "training.md", "results.md", "speed.md")


def links(path: Path) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", path.read_text()) if not t.startswith(("http", "#", "mailto:"))]


def test_readme_is_about_one_screen_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    for page in PAGES:
        assert f"(docs/{page})" in readme, page


@pytest.mark.parametrize("doc", ["README.md", *(f"docs/{p}" for p in PAGES)])
def test_every_relative_link_points_at_a_file_that_exists(doc):
    path = ROOT / doc
    missing = [t for t in links(path) if not (path.parent / t.split("#")[0]).exists()]
    assert not missing, f"{doc}: {missing}"


def test_the_equation_table_points_at_the_methods_that_compute_them():
    """Eqs. 4, 1 and 2 are written out in AFF3D.forward_straightforward (forward takes a faster route)."""
    import inspect

    from torch_impl.attention.aff3d import AFF3D

    readme = (ROOT / "README.md").read_text()
    for eq in ("| 4 |", "| 1 |", "| 2 |"):
        row = next(line for line in readme.splitlines() if line.startswith(eq))
        assert "AFF3D.forward_straightforward" in row
    assert hasattr(AFF3D, "forward_straightforward") and "def forward_straightforward" in inspect.getsource(AFF3D)
