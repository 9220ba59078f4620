"""Entry point: `streamlit run dashboard/app.py` — page config and navigation over pages/."""
import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

st.set_page_config(page_title="Landmark workbench", page_icon="🏛️", layout="wide")
st.title("Landmark recognition workbench")
st.write("The dashboard pages arrive with the next issue; use `python -m core --help` meanwhile.")
