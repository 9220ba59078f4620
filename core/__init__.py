"""Landmark recognition workbench: everything that is not UI.

Data flows one way: readers -> splits -> engine (in a worker process) -> run store -> pages.
Core never prints and never imports Streamlit.
"""

__version__ = "0.1.0"
