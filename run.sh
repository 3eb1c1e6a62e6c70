#!/usr/bin/env bash
# felid's two commands (see README.md), for a fresh Debian 12 machine, as root:
#   ./run.sh demo    the main job: a multi-host felid cluster on this machine, workloads pinging
#   ./run.sh test    ruff, mypy --strict, import-linter contracts, the whole test suite
# Both install what they need first: Debian packages, then the Python package
# and its pinned dependencies in ./.venv.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

APT_PACKAGES=(etcd-server containernetworking-plugins bird2 gobgpd frr prometheus user-mode-linux iproute2 iputils-ping fping socat iperf3 podman runc busybox-static systemd mmdebstrap openssl kmod iptables ipset nftables python3 python3-venv python3-pip)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "run.sh: felid programs the kernel and its tests create network namespaces: run as root" >&2
        exit 1
    fi
}

install_packages() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    # kubectl (its kustomize renders the manifests): Debian's kubernetes-client, unless one is there.
    command -v kubectl >/dev/null || missing+=(kubernetes-client)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

install_python() {
    local python=${PYTHON:-python3}
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "run.sh: felid needs Python >= 3.11 ($python is $("$python" --version 2>&1))" >&2
        exit 1
    fi
    # compat: a plain path in a .pth file, not setuptools' import-hook finder, whose imports cost
    # every Python start (a CNI plugin's among them) about 20 ms here.
    local editable=(--config-settings editable_mode=compat)
    local stamp
    stamp=$( (cat pyproject.toml; echo "${editable[*]}") | sha256sum | cut -d' ' -f1)
    if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.felid-stamp 2>/dev/null)" != "$stamp" ]; then
        log "installing felid and its pinned dependencies into .venv"
        rm -rf .venv
        "$python" -m venv .venv
        .venv/bin/pip install -q --upgrade pip
        .venv/bin/pip install -q "${editable[@]}" -e '.[dev]'
        echo "$stamp" > .venv/.felid-stamp
    fi
}

setup() {
    need_root
    install_packages
    install_python
    # Byte-compile felid itself (the editable install does not): agents started together
    # would otherwise each compile it at their first start, seconds on a small machine.
    .venv/bin/python -m compileall -q -j 0 datastore ipam typha felix bgp felid lab >/dev/null
}

case "${1:-}" in
    demo)
        shift
        setup
        exec .venv/bin/felid demo "$@"
        ;;
    test)
        shift
        setup
        log "ruff"
        .venv/bin/ruff check .
        .venv/bin/ruff format --check .
        log "mypy --strict"
        .venv/bin/mypy
        log "import-linter contracts"
        .venv/bin/lint-imports
        log "pytest"
        # pytest exits 5 when it collected no tests: that is a failure here too.
        exec .venv/bin/python -m pytest "$@"
        ;;
    setup)
        setup
        ;;
    *)
        echo "usage: $0 demo [options] | test [pytest args] | setup" >&2
        exit 2
        ;;
esac
