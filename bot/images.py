"""The pictures the bot keeps on disk: each job's inputs and the results it posted.

Results are kept so that Vary and Upscale can start from them after a restart, and inputs so
that a Re-roll of an img2img or inpainting job can run again. Blocked images are never written.
Pictures older than IMAGE_RETENTION_DAYS are deleted; /forget deletes a member's at once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path


class ImageStore:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, job_id: int, name: str) -> Path:
        return self.folder / f"{job_id}-{name}"

    async def save(self, job_id: int, name: str, data: bytes) -> None:
        """`name` is "image" or "mask" for inputs, "result-N.png"/"result-N.gif" for results."""
        def write() -> None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self._path(job_id, name)
            partial = path.with_name(path.name + ".partial")
            try:
                partial.write_bytes(data)
                partial.replace(path)  # never a half-written picture under the real name
            except OSError:
                partial.unlink(missing_ok=True)  # a full disk: leave nothing half-written behind
                raise

        await asyncio.to_thread(write)

    async def load(self, job_id: int, name: str) -> bytes | None:
        path = self._path(job_id, name)
        return await asyncio.to_thread(lambda: path.read_bytes() if path.is_file() else None)

    async def result(self, job_id: int, index: int) -> bytes | None:
        return await self.load(job_id, f"result-{index}.png")

    async def delete_job(self, job_id: int) -> int:
        """Remove every picture of a job; returns how many files went."""
        def remove() -> int:
            removed = 0
            for path in self.folder.glob(f"{job_id}-*"):
                path.unlink(missing_ok=True)
                removed += 1
            return removed

        return await asyncio.to_thread(remove)

    async def remove_older_than(self, days: float) -> int:
        """Delete every picture last written more than `days` ago; returns how many went."""
        cutoff = time.time() - days * 86400

        def remove() -> int:
            if not self.folder.is_dir():
                return 0
            removed = 0
            for path in self.folder.iterdir():
                try:
                    if path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass  # deleted meanwhile (a Delete button, /forget)
            return removed

        return await asyncio.to_thread(remove)
