"""Report pages: a rewritten report removes the figures it no longer shows, and only those."""

from __future__ import annotations

from pathlib import Path

from flam.models.report import FIGURE_MANIFEST, write_report_page


def test_a_rewritten_report_removes_its_own_stale_figures_only(tmp_path: Path) -> None:
    for name in ("old.png", "kept.png", "mine.png"):
        (tmp_path / name).write_bytes(b"png")
    write_report_page(tmp_path, "# first\n![a](old.png) ![b](kept.png)\n")
    assert (tmp_path / FIGURE_MANIFEST).read_text().split() == ["kept.png", "old.png"]

    write_report_page(tmp_path, "# second\n![b](kept.png) ![c](new.png) [link](../elsewhere/x.png)\n")
    assert not (tmp_path / "old.png").exists()  # shown by the first report only
    assert (tmp_path / "kept.png").exists()  # still shown
    assert (tmp_path / "mine.png").exists()  # never the report's: a person's file stays
    assert (tmp_path / FIGURE_MANIFEST).read_text().split() == ["kept.png", "new.png"]
    assert (tmp_path / "README.md").read_text().startswith("# second")
