"""Sweeps: hyperparameter searches on Optuna (the poster's Fig. 2, done better) and the poster's
holdout table, each launched from one form. Every trial is an ordinary run (Runs, Evaluate,
Compare show it); a background `sweep` job drives the study. The page only reads the study
(plain SELECTs, cached per change of the study) and never trains.

The parts: dashboard.sweep_results (the Results tab), dashboard.sweep_form (the forms that create
a sweep), dashboard.sweep_study (reading a study, cached) and dashboard.sweep_charts (figures)."""
import streamlit as st

from dashboard.sweep_form import new_sweep_tab, poster_tab, session_defaults
from dashboard.sweep_results import results_tab
from dashboard.sweep_study import sweep_list

TABS = ["Results", "New sweep", "Poster's table"]

session_defaults()
goto = st.session_state.pop("sweeps_goto", None)
if goto:                                   # a sweep just launched: show it
    st.session_state["sweeps_tab"] = TABS[0]
    st.session_state["sweeps_pick"] = goto
    st.session_state["sweeps_flash"] = ("success", f"Sweep **{goto}** launched: its trials queue as ordinary runs.")

st.title("🔬 Sweeps")
st.caption("Hyperparameter searches on Optuna (the poster's Fig. 2, done better) and the poster's holdout table. "
           "Sweeps stored elsewhere (`--storage URL`) are seen with "
           "`python -m core sweep --status NAME --storage URL`.")
if "sweeps_tab" not in st.session_state and not sweep_list():
    st.session_state["sweeps_tab"] = TABS[1]
results, new, poster = st.tabs(TABS, key="sweeps_tab", on_change="rerun")
if results.open:
    with results:
        results_tab()
if new.open:
    with new:
        new_sweep_tab()
if poster.open:
    with poster:
        poster_tab()
