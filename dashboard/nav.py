"""Every page of the app, declared once: its file under pages/, title, icon and URL. The entry
point (dashboard/app.py) builds st.navigation from these, and every link or switch between pages
names one of them: `st.page_link(nav.TRAIN.page(), label=...)`, `st.switch_page(nav.EVALUATE.page())`.
A link left without a label or icon shows the page's own, as the navigation does."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

PAGES_DIR = Path(__file__).resolve().parent.parent / "pages"


@dataclass(frozen=True)
class AppPage:
    file: str             # under pages/
    title: str
    icon: str
    url_path: str         # the page's address (a bookmark): keep it when renaming the page
    default: bool = False  # the page at the app's root URL

    def page(self) -> st.Page:
        """This page as an st.Page. Made anew in each script run, not once per process: st.Page
        reads the running script's context, and st.navigation marks the objects it is given as
        runnable, which two sessions must not share."""
        return st.Page(PAGES_DIR / self.file, title=self.title, icon=self.icon, url_path=self.url_path,
                       default=self.default)


DATASET = AppPage("dataset.py", "Dataset", "📊", "dataset", default=True)
TRAIN = AppPage("train.py", "Train", "🚀", "train")
RUNS = AppPage("runs.py", "Runs", "📈", "runs")
SWEEPS = AppPage("sweeps.py", "Sweeps", "🔬", "sweeps")
EVALUATE = AppPage("evaluate.py", "Evaluate", "🎯", "evaluate")
CLASSIFY = AppPage("classify.py", "Classify", "🔍", "classify")
CLASS_MODEL = AppPage("class_model.py", "Class model", "🎨", "class_model")
COMPARE = AppPage("compare.py", "Compare", "⚖️", "compare")
REPORT = AppPage("report.py", "Report", "📄", "report")

SECTIONS = {"Data & training": (DATASET, TRAIN, RUNS, SWEEPS),
            "Understand": (EVALUATE, CLASSIFY, CLASS_MODEL, COMPARE, REPORT)}


def sections() -> dict[str, list[st.Page]]:
    """The navigation's sections and their pages, for st.navigation."""
    return {name: [p.page() for p in pages] for name, pages in SECTIONS.items()}
