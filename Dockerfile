FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ocld ./ocld
COPY core ./core
COPY stream ./stream
COPY learners ./learners
COPY buffers ./buffers
RUN pip install --no-cache-dir .
COPY config ./config
COPY data ./data
RUN useradd --create-home ocld && chown -R ocld /app
USER ocld
ENTRYPOINT ["ocld"]
CMD ["run", "config/docker.yaml"]
