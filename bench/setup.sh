#!/usr/bin/env bash
# Set-up for `make bench`, safe to run again: the Debian tools and LiteLLM's own venv.
#   nginx-light + libnginx-mod-http-echo  the mock upstream and the nginx floor (own instances,
#                                         own config and ports under bench/out/; the stock site
#                                         and port 80 are never used)
#   wrk                                   non-streaming load
#   strace                                records LiteLLM's connect() calls (no call but the mock)
#   bench/.venv-litellm                   litellm[proxy]==1.109.1, the peer; used by the bench only
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(nginx-light libnginx-mod-http-echo wrk strace)
LITELLM_VERSION=1.109.1
UV_VERSION=0.13.9
VENV=bench/.venv-litellm
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}

missing=()
for pkg in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "bench/setup.sh: apt-get install ${missing[*]}"
  # On a systemd host the package also starts the stock nginx on :80; the bench does not use it.
  $sudo apt-get install -y --no-install-recommends "${missing[@]}" ||
    { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

# LiteLLM pins two versions the package index may not carry yet; bench/litellm-overrides.txt
# says which and why. pip cannot override a dependency's pin, uv can.
stamp="$VENV/.installed-$LITELLM_VERSION-$(cksum <bench/litellm-overrides.txt | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
  echo "bench/setup.sh: installing litellm[proxy]==$LITELLM_VERSION into $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  index=$("$VENV/bin/python" -m pip config get global.index-url 2>/dev/null || true)
  UV_DEFAULT_INDEX=${UV_DEFAULT_INDEX:-$index} "$VENV/bin/uv" pip install --quiet \
    --python "$VENV/bin/python" --compile-bytecode \
    --override bench/litellm-overrides.txt "litellm[proxy]==$LITELLM_VERSION"
  touch "$stamp"
fi
