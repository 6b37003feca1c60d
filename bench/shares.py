"""Share read throughput in one run: a 200 MiB file read in the guest from a share, for
each mechanism this host can run, against the same read from the guest's own disk (page
cache dropped before every read); MB/s and the ratio to the disk.

Usage (root, libvirtd running): .venv/bin/python bench/shares.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from _env import bench_services

from agentbox.model.progress import CancelToken
from agentbox.services.create import CreateRequest, create_workspace

SIZE_MIB = 200


def read_mb_s(services, name: str, path: str) -> float:  # type: ignore[no-untyped-def]
    out = bytearray()
    script = (f"sync; echo 3 > /proc/sys/vm/drop_caches; s=$(date +%s.%N); cat {path} > /dev/null;"
              f" e=$(date +%s.%N); echo \"$s $e\"")
    code = services.workspaces.exec(name=name, argv=["sudo", "sh", "-c", script], stdout=out.extend,
                                    stderr=out.extend).exit_code
    if code != 0:
        raise SystemExit(f"reading {path} failed: {out.decode()}")
    start, end = (float(x) for x in out.decode().split()[-2:])
    return SIZE_MIB * 2**20 / 1e6 / (end - start)


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="agentbox-bench-share-"))
    os.chmod(folder, 0o755)
    with (folder / "big").open("wb") as big:
        for _ in range(SIZE_MIB):
            big.write(os.urandom(2**20))
    rows = []
    try:
        with bench_services(template="debian-12") as (services, ctx):
            create_workspace(ctx=ctx, request=CreateRequest(name="io"), on_progress=lambda _: None,
                             cancel=CancelToken())
            make = f"dd if=/dev/urandom of=/var/tmp/big bs=1M count={SIZE_MIB} status=none"
            services.workspaces.exec(name="io", argv=["sh", "-c", make], stdout=lambda _: None,
                                     stderr=lambda _: None)
            disk = read_mb_s(services, "io", "/var/tmp/big")
            for choice in services.shares.mechanisms():
                if not choice.available:
                    print(f"{choice.mechanism.value}: not available here ({choice.reason})")
                    continue
                tag = choice.mechanism.value.replace("9p", "ninep")
                services.shares.add(name="io", source=str(folder), tag=tag, mechanism=choice.mechanism.value)
                rows.append((choice.mechanism.value, read_mb_s(services, "io", f"/mnt/shares/{tag}/big")))
                services.shares.remove(name="io", tag=tag)
    finally:
        (folder / "big").unlink()
        folder.rmdir()
    print(f"read {SIZE_MIB} MiB in the guest (TCG), page cache dropped first")
    print(f"{'source':<22}{'MB/s':>8}{'vs disk':>9}")
    print(f"{'guest disk':<22}{disk:>8.1f}{1.0:>9.2f}")
    for name, rate in rows:
        print(f"{name:<22}{rate:>8.1f}{rate / disk:>9.2f}")


if __name__ == "__main__":
    main()
