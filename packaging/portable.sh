#!/usr/bin/env bash
# A portable build: target/earshot-VERSION-ARCH-linux.tar.gz, a prefix tree (bin/, share/) that
# runs from wherever it is unpacked (the models are found at ../share/earshot/models from the
# binary) and installs into ~/.local with its own install.sh. Tools: cargo and tar.
#
#   packaging/portable.sh && tar -xzf target/earshot-*.tar.gz -C /tmp && /tmp/earshot-*/bin/earshot --version
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(uname -m)
name="earshot-$version-$arch-linux"
cargo build --release --locked
root="target/portable/$name"
rm -rf "$root"
mkdir -p "$root/bin" "$root/share/earshot/models" "$root/share/applications" "$root/share/doc/earshot"
install -m 755 target/release/earshot "$root/bin/"
for m in models/*/; do
  cp -r "$m" "$root/share/earshot/models/"
done
install -m 644 packaging/earshot.desktop "$root/share/applications/"
install -D -m 644 assets/icons/earshot.svg "$root/share/icons/hicolor/scalable/apps/earshot.svg"
for size in 16 32 48 64 128 256 512; do
  install -D -m 644 "assets/icons/earshot-$size.png" "$root/share/icons/hicolor/${size}x${size}/apps/earshot.png"
done
install -m 644 README.md packaging/COPYRIGHT "$root/share/doc/earshot/"
cat > "$root/install.sh" <<'INSTALL'
#!/usr/bin/env bash
# Copies Earshot into PREFIX (default ~/.local): bin/earshot, its models, desktop entry and icons.
set -euo pipefail
prefix=${1:-$HOME/.local}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$prefix"
cp -r "$here/bin" "$here/share" "$prefix/"
command -v update-desktop-database >/dev/null && update-desktop-database "$prefix/share/applications" || true
echo "installed: $prefix/bin/earshot"
INSTALL
chmod 755 "$root/install.sh"
tar -czf "target/$name.tar.gz" -C target/portable "$name"
echo "target/$name.tar.gz"
