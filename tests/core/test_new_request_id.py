"""``new_request_id()`` keeps the seed's ``<prefix>-<uuid4 hex>``: a version-4, RFC 4122 UUID."""

from __future__ import annotations

import uuid

from kilostar_otel import new_request_id


def test_new_request_ids_are_uuid4_hex_and_unique() -> None:
    ids = [new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for request_id in ids:
        prefix, _, tail = request_id.partition("-")
        parsed = uuid.UUID(tail)
        assert prefix == "req"
        assert parsed.hex == tail
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    # Every other bit is random: across 2,000 ids each of the 122 random bits takes both values.
    values = [int(i[4:], 16) for i in ids]
    fixed = (0xF000 << 64) | (0xC000 << 48)
    for bit in range(128):
        if not (1 << bit) & fixed:
            assert len({(v >> bit) & 1 for v in values}) == 2, bit


def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    import os

    new_request_id()  # the parent has random bytes buffered now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, ",".join(new_request_id() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = set(os.read(read, 100_000).decode().split(","))
    os.close(read)
    parent = {new_request_id() for _ in range(50)}
    assert len(child) == 50
    assert not child & parent


def test_ids_from_many_threads_are_all_different() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: new_request_id(), range(5000)))
    assert len(set(ids)) == len(ids)
