"""A directory laid out as the kubelet lays out a Secret volume, updated the way it updates one.

    KEY -> ..data/KEY
    ..data -> ..2026_12_08_00_41_07.000001     (swapped atomically: a new dir, `..data_tmp`, rename over `..data`)
    ..2026_12_08_00_41_07.000001/KEY           (the real files; the previous dir is removed after the swap)

As Kubernetes' AtomicWriter (pkg/volume/util/atomic_writer.go) does it, so a reader through `KEY` sees the old
value or the new one, never a mix.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

_SERIAL = itertools.count(1)


class SecretVolume:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        """The path a config names (`os.file/<path>`): the user-visible symlink, as in the pod."""
        return self.root / key

    def ref(self, key: str) -> str:
        return f"os.file{self.path(key)}"

    def write(self, files: Mapping[str, bytes]) -> None:
        """Project `files` as the new content of the volume: a new timestamped dir, then one atomic swap."""
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{next(_SERIAL):06d}"
        new_dir = self.root / stamp
        new_dir.mkdir()
        for key, content in files.items():
            (new_dir / key).write_bytes(content)
            os.chmod(new_dir / key, 0o440)
        data = self.root / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        tmp = self.root / "..data_tmp"
        os.symlink(stamp, tmp)
        os.replace(tmp, data)  # the one atomic step readers can observe
        for key in files:
            link = self.root / key
            if not link.is_symlink():
                os.symlink(f"..data/{key}", link)
        if old is not None:
            shutil.rmtree(self.root / old)
