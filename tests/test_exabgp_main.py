"""bgp.exabgp_main's repair of ExaBGP's reactor: a closed descriptor leaves its poller instead of
being reported (POLLNVAL) on every turn, which made the reactor sleep blind for a second; and its
reconnect backoff, jittered and capped."""

from __future__ import annotations

import os
import select
import time

from exabgp.reactor import delay

from bgp.exabgp_main import RETRY_CAP, ClosedFdDroppingPoll, _increase_with_jitter, _reset_with_jitter


def test_a_closed_descriptor_is_dropped_and_the_live_ones_still_report() -> None:
    closed_r, closed_w = os.pipe()
    live_r, live_w = os.pipe()
    try:
        poller = ClosedFdDroppingPoll()
        poller.register(closed_r, select.POLLIN)
        poller.register(live_r, select.POLLIN)
        os.close(closed_r)  # as a peer's socket is closed while still registered
        closed_r = -1
        assert poller.poll(0) == []  # plain select.poll would answer [(closed_r, POLLNVAL)] forever
        os.write(live_w, b"x")
        assert poller.poll(0) == [(live_r, select.POLLIN)]
        reused_r, reused_w = os.pipe()  # the number may come back: it is registered afresh
        try:
            poller.register(reused_r, select.POLLIN)
            os.write(reused_w, b"y")
            assert sorted(poller.poll(0)) == sorted([(live_r, select.POLLIN), (reused_r, select.POLLIN)])
            poller.unregister(reused_r)
            poller.unregister(reused_r)  # twice, as ExaBGP may for a descriptor dropped here: no error
        finally:
            os.close(reused_r)
            os.close(reused_w)
    finally:
        for fd in (closed_r, closed_w, live_r, live_w):
            if fd >= 0:
                os.close(fd)


def test_plain_poll_reports_a_closed_descriptor_forever() -> None:
    """What is repaired, shown on select.poll itself: this failing would mean the repair is moot."""
    r, w = os.pipe()
    poller = select.poll()
    poller.register(r, select.POLLIN)
    os.close(r)
    try:
        assert poller.poll(0) == [(r, select.POLLNVAL)]
        assert poller.poll(0) == [(r, select.POLLNVAL)]
    finally:
        os.close(w)


def test_reconnect_waits_are_jittered_and_grow_to_the_cap_only() -> None:
    backoff = delay.Delay()
    waits = []
    for _ in range(30):  # ExaBGP's own would have grown to 60 s by now
        before = time.time()
        _increase_with_jitter(backoff)
        waits.append(backoff._time - before)
    assert all(0.0 <= w <= RETRY_CAP + 2.0 + 0.1 for w in waits), waits
    assert max(waits) >= RETRY_CAP  # it does grow to the cap
    assert len({round(w, 3) for w in waits[-10:]}) > 1  # and the capped waits still differ
    _reset_with_jitter(backoff)
    assert backoff._next == 0 and backoff._time - time.time() <= 2.0
