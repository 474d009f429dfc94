FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schema ./schema
COPY kql ./kql
COPY server ./server
RUN pip install --no-cache-dir .
ENV QUARRY_DATA_DIR=/data QUARRY_HOST=0.0.0.0 QUARRY_PORT=8080
VOLUME ["/data"]
EXPOSE 8080
CMD ["quarry", "serve"]
