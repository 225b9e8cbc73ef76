"""ocld's pure runtime core: the learning core, drift monitors, prequential metrics, the record
codec and the snapshot format. Installed as ``ocld.core``.

Nothing here does I/O (no Kafka, Redis, sockets, HTTP or files; a test enforces it): the daemon
(``ocld.stream``) and ``ocld evaluate`` wrap it. Everything here is a function of the values it
is given, which is what makes a killed and restarted daemon learn the same state.
"""
