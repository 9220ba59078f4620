"""Entry point: `streamlit run dashboard/app.py` — page config and navigation over pages/."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from core.errors import UserError  # noqa: E402
from core.runs.store import IndexDamaged, RunStore  # noqa: E402
from dashboard import serving  # noqa: E402
from dashboard.common import schedule_queue, store  # noqa: E402

st.set_page_config(page_title="Landmark workbench", page_icon="🏛️", layout="wide")
refused = serving.hold()    # .streamlit/config.toml's limits hold, and loopback only, however the app was started
if refused:
    st.error(refused, icon="🚫")
    st.stop()
try:
    store()             # LANDMARKS_HOME and its run database must be usable before any page
except IndexDamaged as e:
    st.error(str(e), icon="🚫")
    if st.button("Rebuild the run index from the run folders", type="primary", key="app_rebuild"):
        out = RunStore.rebuild()
        st.cache_resource.clear()
        st.success(f"Rebuilt the index from {out['runs']} run folder(s).")
        st.rerun()
    st.stop()
except UserError as e:
    st.error(str(e))
    st.stop()
schedule_queue()        # queued runs start after an app restart whichever page opens first

from dashboard import nav  # noqa: E402 - every page declared once, with its title, icon and URL

st.navigation(nav.sections()).run()
