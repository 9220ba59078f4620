"""Pages defined once (dashboard/nav.py) and linked by their page objects; no sys.path edits
outside the entry point; split labels derived from the runs' configurations (issue 18)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def declared():
    from dashboard import nav
    return [p for pages in nav.SECTIONS.values() for p in pages]


def test_every_page_file_is_declared_once_with_its_url():
    pages = declared()
    assert sorted(p.file for p in pages) == sorted(f.name for f in (ROOT / "pages").glob("*.py"))
    assert len({p.url_path for p in pages}) == len(pages)                 # one address each
    assert [p.file for p in pages if p.default] == ["dataset.py"]        # the app opens on the Dataset page
    assert {p.file: p.url_path for p in pages}["class_model.py"] == "class_model"   # bookmarks keep working


def test_no_page_is_linked_by_its_file_path_and_only_the_entry_point_edits_sys_path():
    files = [*(ROOT / "pages").glob("*.py"), *(ROOT / "dashboard").glob("*.py")]
    for f in files:
        text = f.read_text()
        if f.name != "nav.py":
            assert not re.search(r'\w+\.py"', text), f"{f.name} names a page by its file"
        if f.name != "app.py":
            assert "sys.path" not in text, f"{f.name} edits sys.path"


def test_split_labels_come_from_the_runs_configurations():
    from dashboard.common import split_labels
    assert split_labels([{"holdout": 0.05, "val": 0.25}]) == {
        "holdout": "Holdout (5%)", "val": "Validation (25%)", "train": "Train"}
    assert split_labels([{}])["holdout"] == "Holdout (1%)"                 # a config without it: the default
    mixed = split_labels([{"holdout": 0.01, "val": 0.2}, {"holdout": 0.02, "val": 0.2}])
    assert mixed["holdout"] == "Holdout" and mixed["val"] == "Validation (20%)"   # runs differ: no share
