"""bgp: the per-host BGP agent, with ExaBGP as its speaker.

``calc`` (the sessions and announcements the datastore asks for), ``adjribout``
(what each session carries, route reflection), ``rib`` (learned routes,
graceful restart, loop checks), ``routing`` (their kernel form) and ``status``
are pure; ``exabgp_config``, ``speaker`` and ``bridge`` run ExaBGP; ``agent``
reconciles all of it, programming learned routes through felix's route table.
"""
