"""Host files (the MTU file, subnet.env) are written whole, by any number of writers at once."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from felix.dataplane.hostfile import MTUFile, read_int, write_atomically


def _write_many(path: str, value: int) -> None:
    for _ in range(300):
        write_atomically(Path(path), f"{value}\n")


def test_writers_at_once_never_trip_over_each_other(tmp_path: Path) -> None:
    target = tmp_path / "state" / "mtu"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_many, args=(str(target), v)) for v in (1400, 1450)]
    for process in processes:
        process.start()
    with ThreadPoolExecutor(max_workers=4) as pool:  # and threads of this process beside them
        list(pool.map(lambda v: _write_many(str(target), v), (1480, 1500, 9000, 8950)))
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert read_int(target) in {1400, 1450, 1480, 1500, 9000, 8950}
    assert [p.name for p in target.parent.iterdir()] == ["mtu"]  # no temporary file left behind


def test_an_unwritable_mtu_file_is_logged_and_retried(tmp_path: Path) -> None:
    target = tmp_path / "mtu"
    target.mkdir()  # something that cannot be replaced by a file
    mtu = MTUFile(target)
    mtu.apply(1450)  # logged, not raised
    target.rmdir()
    mtu.apply(1450)
    assert target.read_text() == "1450\n"
