# smc-quant service image: slim, non-root, health-checked through `smc-quant check`.
# One image for every role: `run` (single process), `shard` and `executor` (multi-process, docs/scaling.md),
# `migrate`, `emulator`, `demo`. Dependencies at the exact versions of requirements.lock; the base image's Debian
# release is named (bookworm), so a rebuild does not change the system libraries under the service.
# SIGTERM → graceful stop within about 20 s (compose gives 30 s before SIGKILL).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY smc_quant ./smc_quant
COPY shards ./shards
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels -c requirements.lock .

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 smc
COPY --from=build /wheels /wheels
# The compiled kernels are cached where the service user reads them (numba's default, next to the installed
# sources, is not writable by that user: it would compile again, for about a minute, in every new container).
ENV NUMBA_CACHE_DIR=/var/cache/smc-quant/numba
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels \
 && python -c "from smc_quant.features import warm_up; warm_up()" \
 && chown -R smc:smc /var/cache/smc-quant
WORKDIR /app
COPY migrations ./migrations
COPY config ./config
# report, backtest and train write into ./reports/ by default: owned by the service user
RUN mkdir -p /app/reports && chown smc:smc /app/reports
ENV SMC_MIGRATIONS_DIR=/app/migrations \
    SMC_OPS__HOST=0.0.0.0 \
    SMC_OPS__PORT=8080 \
    SMC_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1 \
    SMC_LOG_LEVEL=WARNING
USER smc
RUN mkdir -p /home/smc/.local/state/smc-quant
STOPSIGNAL SIGTERM
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 CMD ["smc-quant", "check"]
ENTRYPOINT ["smc-quant"]
CMD ["run"]
