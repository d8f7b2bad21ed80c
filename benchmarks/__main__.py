"""`python -m benchmarks [SUITE [ARGS...]]`: list the suites, or run one, as `ncemu bench` does."""

import sys

from emulator.commands.bench import run_suite, suites_text

if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "--list"):
    print("usage: python -m benchmarks [SUITE [ARGS...]]\n\nsuites:\n" + suites_text())
    sys.exit(0)
sys.exit(run_suite(sys.argv[1], sys.argv[2:]))
