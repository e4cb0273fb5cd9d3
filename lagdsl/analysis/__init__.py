"""What growth did: reading run directories, curves, rank statistics, the report and the lag study.

Everything here but `study` is torch-free: `lagdsl report` reads JSON and draws with matplotlib.
"""
