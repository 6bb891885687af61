# Sourced by scripts/demo and scripts/test: makes sure a fresh Debian or
# Ubuntu machine has what building and testing Hourglass needs.
set -euo pipefail

hourglass_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Debian packages the builds and the tests need: the toolchain's, the real
# services tests start (PostgreSQL, sshd, keyring, rsyslog with TLS), the shells the prompt
# hook is tested in, and the desktop app's (WebKitGTK and the tray library to
# build; Xvfb, a notification daemon, a StatusNotifier host, WebKit's
# WebDriver and a clipboard reader to test it headless; Chromium and its
# WebDriver for the broker's approval page), and Python's venv
# for schemathesis and aiosmtpd.
apt_packages=(build-essential pkg-config ca-certificates curl mold file python3 python3-venv
    postgresql openssh-server openssh-client rsyslog rsyslog-openssl
    libdbus-1-dev dbus dbus-x11 gnome-keyring libsecret-tools
    tmux zsh fish
    libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libsoup-3.0-dev libxdo-dev libssl-dev
    xvfb xauth webkit2gtk-driver dunst imagemagick xsel chromium chromium-driver
    haskell-status-notifier-item-utils)
# Node.js runs the OpenID Connect provider of the login tests; a machine may
# already have it from elsewhere (with its own npm).
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_packages+=(nodejs npm)

missing=()
for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The login tests' OpenID Connect provider (npm oidc-provider, run by node):
# node_modules exactly as tests/oidc/package-lock.json says, npm's cache
# outside the clone. oidc-provider 8 runs on Debian 12's Node 18 and on newer.
oidc_dir="$hourglass_root/tests/oidc"
if [ ! -f "$oidc_dir/node_modules/.package-lock.json" ] || [ "$oidc_dir/package-lock.json" -nt "$oidc_dir/node_modules/.package-lock.json" ]; then
    echo "setup: installing the tests' OpenID Connect provider (npm ci in tests/oidc)" >&2
    (cd "$oidc_dir" && npm_config_cache="${npm_config_cache:-$HOME/.cache/hourglass/npm}" \
        npm ci --no-audit --no-fund --loglevel=error >&2)
fi

# Python tools the tests run, each pinned (a run is reproducible) in a venv
# of its own outside the clone: pip SPEC into VENV unless PACKAGE is there
# at VERSION.
pinned_venv() {
    local venv=$1 package=$2 version=$3 spec=$4
    if ! "$venv/bin/python" -m pip show "$package" 2>/dev/null | grep -qx "Version: $version"; then
        echo "setup: installing $package $version (pip, into $venv)" >&2
        [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
        "$venv/bin/pip" install -q "$spec" >&2
    fi
}

# schemathesis tests the HTTP API against its own OpenAPI document
# (tests/tests/e2e/openapi.rs).
schemathesis_venv="$HOME/.cache/hourglass/schemathesis"
pinned_venv "$schemathesis_venv" schemathesis 4.32.5 "schemathesis==4.32.5"
export HOURGLASS_SCHEMATHESIS="$schemathesis_venv/bin/schemathesis"

# aiosmtpd is the real SMTP server the email notification tests send to
# (tests/src/smtp.rs).
aiosmtpd_venv="$HOME/.cache/hourglass/aiosmtpd"
pinned_venv "$aiosmtpd_venv" aiosmtpd 1.4.6 "aiosmtpd==1.4.6"
export HOURGLASS_AIOSMTPD_PYTHON="$aiosmtpd_venv/bin/python"

# moto is the real AWS API server (STS, IAM, with IAM authentication on) the
# AWS provider's tests and benchmark run against (tests/src/moto.rs); its
# venv's boto3 is what those tests use AWS with.
moto_venv="$HOME/.cache/hourglass/moto"
pinned_venv "$moto_venv" moto 5.2.6 "moto[server]==5.2.6"
export HOURGLASS_MOTO_VENV="$moto_venv"

# Rust: the toolchain the workspace declares (rust-version in Cargo.toml).
if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || {
        echo "setup: installing Rust with rustup" >&2
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >&2
    }
    export PATH="$HOME/.cargo/bin:$PATH"
fi

# tauri-driver bridges WebDriver to WebKitWebDriver for the desktop tests.
if ! command -v tauri-driver >/dev/null 2>&1; then
    echo "setup: installing tauri-driver (cargo install)" >&2
    cargo install tauri-driver --locked --quiet >&2
fi
export PATH="$HOME/.cargo/bin:$PATH"

# The desktop app's front end: the Tauri crate embeds ui/dist when it
# compiles, so it is built before cargo runs.
ui_dir="$hourglass_root/ui"
if [ ! -f "$ui_dir/node_modules/.package-lock.json" ] || [ "$ui_dir/package-lock.json" -nt "$ui_dir/node_modules/.package-lock.json" ]; then
    echo "setup: installing the desktop front end's packages (npm ci in ui)" >&2
    (cd "$ui_dir" && npm_config_cache="${npm_config_cache:-$HOME/.cache/hourglass/npm}" \
        npm ci --no-audit --no-fund --loglevel=error >&2)
fi
(cd "$ui_dir" && npm run --silent build -- --logLevel error >&2)

# mold links several times faster than the default linker; builds are the
# slow part of every run on a small machine.
# Added once: flags that differ between runs make cargo rebuild everything.
if command -v mold >/dev/null 2>&1; then
    case "${RUSTFLAGS:-}" in
        *fuse-ld=mold*) ;;
        *) export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C link-arg=-fuse-ld=mold" ;;
    esac
fi
cd "$hourglass_root"
