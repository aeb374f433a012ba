"""A regular (non-editable) install carries everything the bot needs at run time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_a_regular_install_finds_its_own_migrations(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", minversion="77")  # built here, offline, without build isolation
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(ROOT)],
        check=True, timeout=300, cwd=tmp_path, capture_output=True,
    )
    probe = "import json, bot.store as s; print(json.dumps([s.__file__, [m.name for m in s.bundled_migrations()]]))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(site)})
    where, names = json.loads(done.stdout)
    assert Path(where).is_relative_to(site)
    assert names == sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
