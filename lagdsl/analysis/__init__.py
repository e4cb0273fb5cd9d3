"""What growth did: reading run directories, curves, rank statistics, the report and the lag study.

Everything here but `study` is torch-free: `lagdsl report` reads JSON and draws with matplotlib.
"""


def file_name(text: str) -> str:
    """`text` made safe as part of a file name: anything but letters, digits, `-`, `_` and `.`
    becomes `_`."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
