#!/usr/bin/env bash
# Installs the system packages the local stack and the tests need: VictoriaMetrics (takes the InfluxDB v2 write API
# locally), PostgreSQL (the shared state of several instances: `stack up --with-postgres` and its tests) and
# Chromium with its driver (the console's real-browser tests).
set -euo pipefail
missing=()
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# The server's binaries are not on PATH (pg_config --bindir names them); pg_config comes with the package.
{ command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/postgres" ]; } || missing+=(postgresql)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
