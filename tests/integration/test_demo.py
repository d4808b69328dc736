"""`cdc demo` (the README's main command) end to end on the real stack: it must exit 0 and
print, before and after its live change, the mirror's aggregate equal to Postgres' own.
Runs on the session's registry so the demo's connector keeps the other tests' tables."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cdc.mirrors import service

pytestmark = pytest.mark.integration


def test_demo_ends_equal_to_postgres(ctx: service.Context) -> None:
    env = {**os.environ, "CDC_REGISTRY_PATH": str(ctx.settings.registry_file)}
    try:
        out = subprocess.run([sys.executable, "-m", "cdc.cli", "demo", "--rows", "600"], capture_output=True,
                             text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr[-3000:]
        assert out.stdout.count("equal: yes") == 2 and "equal: NO" not in out.stdout, out.stdout
        assert "Before the change:" in out.stdout and "After the change (visible" in out.stdout
        assert "answered by Apache Pinot" in out.stdout or "answered by Pinot server" in out.stdout
    finally:
        if ctx.registry.get_mirror("public_demo_orders"):
            service.remove_mirror(ctx, "public_demo_orders", drop_data=True, progress=lambda _m: None)
