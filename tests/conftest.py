"""Suite-wide pytest hooks."""
import importlib.util


def pytest_terminal_summary(terminalreporter):
    """States whether the tests that need T5X ran, since they skip where t5x is not installed."""
    skipped = terminalreporter.stats.get("skipped", [])
    t5x_skips = [report for report in skipped if "t5x" in str(report.longrepr).lower()]
    if importlib.util.find_spec("t5x") is not None:
        line = "T5X is installed: the T5X tests ran (%d skipped for t5x)." % len(t5x_skips)
    else:
        line = ("T5X is not installed: %d test modules or tests that need it were skipped "
                "(pip install --no-deps -r requirements-t5x.txt)." % len(t5x_skips))
    terminalreporter.write_line(line)
