"""bgp.exabgp_main's repair of ExaBGP's reactor: a closed descriptor leaves its poller instead of
being reported (POLLNVAL) on every turn, which made the reactor sleep blind for a second."""

from __future__ import annotations

import os
import select

from bgp.exabgp_main import ClosedFdDroppingPoll


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
