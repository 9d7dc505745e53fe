"""The node's blob scrubber, on its own thread: re-read every copy at a bounded rate.

``storage.volume.Scrubber`` re-reads the node's blobs round robin at ``rate_bytes_s`` and
names the ones whose bytes no longer match their checksum. This thread steps it about once a
second; a corrupt copy is taken out of view at once (``Volumes.remove``, its files go to the
janitor) and logged as ``blob_corrupt``. Its removal reaches the master with the node's next
report, and the master's repair planner copies the blob back here, or elsewhere, from a good
copy. Disco had no scrubber: a bad disk sector was found only when a job read it.
"""
from __future__ import annotations

import threading
import time

from mesh import log as mesh_log
from storage.volume import Scrubber

STEP_S = 1.0


class ScrubThread:
    def __init__(self, volumes, janitor, node_name: str, rate_bytes_s: int):
        self.volumes, self.janitor = volumes, janitor
        self.scrubber = Scrubber(volumes, rate_bytes_s)
        self.log = mesh_log.get(node=node_name)
        self.corrupt = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"scrub-{node_name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(STEP_S):
            try:
                bad = self.scrubber.step(time.monotonic(), STEP_S / 2)
            except Exception:  # a bug of ours: say so, keep scrubbing later
                self.log.exception("scrub_failed")
                continue
            for name in bad:
                self.corrupt += 1
                self.log.warning("blob_corrupt", blob=name, corrupt=self.corrupt)
                for path in self.volumes.remove(name):
                    self.janitor.remove(path)
