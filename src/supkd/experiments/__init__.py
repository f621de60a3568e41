"""Experiments: configs, grids of runs, the run store, reports and the demo."""
