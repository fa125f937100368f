"""A test-only sweep trial: f(x) = (x - 0.3)^2, written to <run_dir>/metrics.json like colorlab.fit.

Exits 3 when x > 0.95, so that tests see failed trials too.
"""

import json
import sys
from pathlib import Path

args = dict(a.lstrip("+").split("=", 1) for a in sys.argv[1:])
x = float(args["x"])
if x > 0.95:
    sys.exit(3)
run_dir = Path(args["run_dir"])
run_dir.mkdir(parents=True, exist_ok=True)
(run_dir / "metrics.json").write_text(json.dumps({"objective": (x - 0.3) ** 2}))
