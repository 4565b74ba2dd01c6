# syntax=docker/dockerfile:1
#
# tcp-pool-proxy as a container image: the single binary that `deno task compile` builds, on
# Debian bookworm-slim, run as a non-root user (uid 10001).
#
#   docker build -t tcp-pool-proxy .
#   docker run --rm -p 8848:8848 tcp-pool-proxy \
#     --listen 0.0.0.0:8848 --upstream redis.internal:6379 --pool reuse --protocol redis \
#     --admin 0.0.0.0:9090 --max-clients 4000 --drain-timeout 8s
#
# Arguments after the image name replace the whole default CMD below, so repeat --listen,
# --admin and --max-clients when you give your own (a flag given twice is an error, exit 2).
#
# Why bookworm-slim and not distroless: the compiled binary needs glibc and libgcc, which both
# have, but distroless has no shell, so no HEALTHCHECK can run in it and the entrypoint below
# cannot raise the open-file limit; nor has it `prlimit`, so `--max-clients auto` would assume
# a limit of 1024. The price is the size of bookworm-slim's base, some tens of MB more.
# To pin the bases exactly, add their digests (`denoland/deno:2.9.6@sha256:...`).

# ---- build: the compile task's `deno compile`, with the lockfile frozen ----
FROM denoland/deno:2.9.6 AS build
WORKDIR /build
COPY deno.json deno.lock main.ts ./
COPY src/ ./src/
# The same flags as `deno task compile` in deno.json (tests/deploy_test.ts checks that they
# stay the same). --frozen-lockfile fails the build if deno.lock does not match deno.json.
RUN deno compile --frozen-lockfile --exclude-unused-npm --allow-net --allow-read --allow-run=prlimit --v8-flags=--max-semi-space-size=2,--heap-growing-percent=20 \
      --output /out/tcp-pool-proxy main.ts \
 && /out/tcp-pool-proxy --version

# ---- runtime ----
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 tcp-pool-proxy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tcp-pool-proxy
COPY --from=build /out/tcp-pool-proxy /usr/local/bin/tcp-pool-proxy
# Numeric, so that Kubernetes' runAsNonRoot can check it without a passwd file.
USER 10001:10001

# 8848: clients (--listen); 9090: the admin endpoint (--admin: /healthz, /readyz, /metrics).
# The admin endpoint has no authentication: publish it only to networks you trust.
EXPOSE 8848/tcp 9090/tcp

# SIGTERM starts a drain: the proxy stops accepting, lets running sessions finish for up to
# --drain-timeout, and exits 0 (a second SIGTERM exits 143 at once). `docker stop` waits 10
# seconds before it sends SIGKILL, hence `--drain-timeout 8s` in the CMD below; for a longer
# drain raise both, e.g. `docker run --stop-timeout 45 ... --drain-timeout 30s`.
STOPSIGNAL SIGTERM

# GET /healthz on the admin port, with bash's /dev/tcp (the image has no curl or wget): healthy
# when the status line says 200. If you move --admin off port 9090, override this check
# (`docker run --health-cmd ...`) or disable it (`--no-healthcheck`). Kubernetes ignores
# HEALTHCHECK and uses the probes in deploy/kubernetes.yaml instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r status <&3 && [[ $status == HTTP/1.?' 200'* ]]"]

# The entrypoint raises the soft open-file limit to the hard one, as Go programs do at start
# (container runtimes often set a soft limit of 1024 under a much higher hard one); if that
# fails, sh says why on stderr and the proxy starts anyway. It then execs the proxy, which
# becomes PID 1 and gets the signals itself. The proxy spawns only `prlimit`, once, and waits
# for it, so no init process is needed to reap children.
ENTRYPOINT ["/bin/sh", "-c", "ulimit -n \"$(ulimit -Hn)\" || true; exec /usr/local/bin/tcp-pool-proxy \"$@\"", "tcp-pool-proxy"]

# The defaults: clients on every interface of the container, the admin endpoint on port 9090 of
# the container network, logs as JSON lines on stderr. `--upstream upstream:8849` is a
# placeholder: give your own. --max-clients is explicit because in a container memory, not the
# open-file limit, is the real bound (about 12 KiB per held session at rest, more while data
# moves; see README, Performance): `auto` would take it from the limit, often 1048576.
CMD ["--listen", "0.0.0.0:8848", "--upstream", "upstream:8849", "--admin", "0.0.0.0:9090", "--max-clients", "4000", "--drain-timeout", "8s", "--log-format", "json"]
