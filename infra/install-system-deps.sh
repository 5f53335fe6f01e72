#!/usr/bin/env bash
# Installs the system packages the local stack needs (VictoriaMetrics takes the InfluxDB v2 write API locally).
set -euo pipefail
if command -v victoria-metrics >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq victoria-metrics >/dev/null
