"""Runs: the run store (folders + index), the one job system, its worker and job kinds, rebuild."""
