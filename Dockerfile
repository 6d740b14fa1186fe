# One image for the scanner and the workers. GPU workers need the NVIDIA runtime (compose profile "gpu").
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY runner runner
COPY migrations migrations
RUN pip install --no-cache-dir .
ENTRYPOINT ["scriptorium"]
