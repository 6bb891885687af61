# Sourced by scripts/demo and scripts/test: makes sure a fresh Debian or
# Ubuntu machine has what building and testing Hourglass needs.
set -euo pipefail

hourglass_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Debian packages every build needs. Later parts of the suite add their own
# (PostgreSQL, sshd, WebKitGTK) to this list.
apt_packages=(build-essential pkg-config ca-certificates curl mold
    postgresql openssh-server openssh-client
    libdbus-1-dev dbus gnome-keyring libsecret-tools
    tmux zsh fish)
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

# Rust: the toolchain the workspace declares (rust-version in Cargo.toml).
if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || {
        echo "setup: installing Rust with rustup" >&2
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >&2
    }
    export PATH="$HOME/.cargo/bin:$PATH"
fi

# mold links several times faster than the default linker; builds are the
# slow part of every run on a small machine.
if command -v mold >/dev/null 2>&1; then
    export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-fuse-ld=mold"
fi
cd "$hourglass_root"
