FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ocld ./ocld
COPY core ./core
COPY stream ./stream
COPY learners ./learners
COPY buffers ./buffers
RUN pip install --no-cache-dir .
# Every codec Kafka defines must decode (pyproject.toml pulls their wheels; they need no system
# library): fail the build, not the first compressed batch, if one is missing.
RUN python -c "import sys, kafka.codec as c; sys.exit(0 if c.has_gzip() and c.has_snappy() and c.has_lz4() and c.has_zstd() else 'kafka-python lacks the gzip, snappy, lz4 or zstd library')"
COPY config ./config
COPY data ./data
RUN useradd --create-home ocld && chown -R ocld /app
USER ocld
# http.port in config/docker.yaml: / (the live dashboard), /metrics and /healthz (docker-compose.yml's healthcheck)
EXPOSE 9100
ENTRYPOINT ["ocld"]
CMD ["run", "config/docker.yaml"]
