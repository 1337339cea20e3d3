"""``python -m benchmarks [--quick]``: every benchmark, one at a time; rewrites docs/benchmarks.md."""

import sys

from benchmarks.runner import main

sys.exit(main())
