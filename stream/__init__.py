"""ocld's runtime and everything that touches the outside world (Kafka, Redis, files, HTTP).

Installed as ``ocld.stream``; ``import ocld`` (always first) pins BLAS to one thread.
"""
