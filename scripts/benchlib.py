"""Helpers shared by the benchmark scripts: BENCHMARKS.md sections and
number formatting."""
import re
from pathlib import Path


def replace_section(path: Path, key: str, title: str, body: str) -> None:
    """Replaces (or appends) the section delimited by
    `<!-- bench:KEY -->` ... `<!-- /bench:KEY -->` in BENCHMARKS.md, leaving the
    other scripts' sections alone."""
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{start}\n## {title}\n\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEvery figure here is written by a script under `scripts/`; rerun it to refresh.\n"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def mbps(nbytes: int, seconds: float, raw: bool = False):
    v = nbytes / seconds / 1e6 if seconds > 0 else float("inf")
    return v if raw else f"{v:.1f}"


def percentile(values, p):
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
