"""Where the suites keep their journal files: in tmpfs when the machine has one.

The suites model durability themselves (power loss through the VFS in ``powerloss``; a killed
process leaves the page cache intact), so a real ``fsync`` only costs time.
"""

from __future__ import annotations

import os
import tempfile

SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A temporary directory, removed on exit, preferably in memory."""
    return tempfile.TemporaryDirectory(dir=SCRATCH, prefix="litedurable-")
