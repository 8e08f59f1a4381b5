"""The reproduction runner behind ``benchmarks/reproduce.py``: claims, runs, statistics, reports."""
