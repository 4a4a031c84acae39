"""The robot-side client imports numpy and an HTTP library, nothing of the training or serving stack."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "fastapi", "lightning", "tensorflow", "json_numpy")

PROBE = f"""
import json, sys, time
start = time.perf_counter()
import vla.client, vla.wire
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def test_client_import_leaves_heavy_packages_out():
    """A fresh interpreter importing ``vla.client`` and ``vla.wire`` loads none of ``HEAVY``."""
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"import vla.client, vla.wire: {probe['seconds']:.3f} s")
    assert probe["loaded"] == []
