# mllp-trio listener image: small base, non-root, the listener in the foreground.
#
#   docker build -t mllp-trio .
#   docker run -d -p 2575:2575 -p 127.0.0.1:9464:9464 \
#       -v /etc/mllp-trio:/certs:ro -v mllp-journal:/var/lib/mllp-trio mllp-trio
#
# /certs must hold server.pem, server.key and ca.pem (the CA of the client
# certificates); every setting is an MLLP_TRIO_LISTEN_* variable below, and
# any other listen flag can be appended to `docker run ... mllp-trio`.
# tests/test_deploy.py runs this ENTRYPOINT with these variables.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mllp_trio ./mllp_trio
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/mllp-trio --shell /usr/sbin/nologin mllp \
    && mkdir -p /certs /var/lib/mllp-trio \
    && chown mllp:mllp /var/lib/mllp-trio && chmod 0700 /var/lib/mllp-trio
ENV PYTHONUNBUFFERED=1 \
    MLLP_TRIO_LISTEN_HOST=0.0.0.0 \
    MLLP_TRIO_LISTEN_PORT=2575 \
    MLLP_TRIO_LISTEN_CERT=/certs/server.pem \
    MLLP_TRIO_LISTEN_KEY=/certs/server.key \
    MLLP_TRIO_LISTEN_CA=/certs/ca.pem \
    MLLP_TRIO_LISTEN_STORE=/var/lib/mllp-trio/journal \
    MLLP_TRIO_LISTEN_METRICS=0.0.0.0:9464 \
    MLLP_TRIO_LISTEN_RETENTION=30d \
    MLLP_TRIO_LISTEN_LOG_FORMAT=json
VOLUME ["/certs", "/var/lib/mllp-trio"]
EXPOSE 2575 9464
USER mllp
# Liveness only: /readyz is for load balancers and Prometheus alerts.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["mllp-trio", "listen"]
