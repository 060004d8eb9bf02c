#!/usr/bin/env bash
# Installs a built .deb into a fresh Debian (debootstrap, minimal base) and checks that the
# installed earshot starts, indexes and queries from the command line. Needs root and network
# access to a Debian mirror, and ffmpeg for the test audio; run after `cargo deb`.
#
#   sudo packaging/check-deb.sh target/debian/earshot_*.deb [SUITE] [DIR]
set -euo pipefail
deb=$(realpath "$1")
suite=${2:-bookworm}
root=${3:-/tmp/earshot-deb-check}
if [ ! -x "$root/usr/bin/apt-get" ]; then
  debootstrap --variant=minbase "$suite" "$root" http://deb.debian.org/debian
fi
cp "$deb" "$root/tmp/"
mounted() { mountpoint -q "$root/proc"; }
mounted || mount -t proc proc "$root/proc"
trap 'mounted && umount "$root/proc"' EXIT
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }
in_root apt-get update -qq
in_root apt-get install -y "/tmp/$(basename "$deb")"
in_root earshot --version
# A library of three tones and a noise burst, made here (ffmpeg) and copied in.
mkdir -p "$root/tmp/lib/tones"
for f in 220 440 880; do
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "sine=frequency=$f:duration=4" \
    -ar 16000 "$root/tmp/lib/tones/tone-$f.wav"
done
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "anoisesrc=duration=4:seed=1" \
  -ar 22050 -c:a flac "$root/tmp/lib/noise.flac"
in_root earshot index --db /tmp/db /tmp/lib
in_root earshot info --db /tmp/db
in_root earshot query --db /tmp/db --top 3 /tmp/lib/tones/tone-440.wav
in_root earshot query --db /tmp/db --mode fingerprint --top 3 /tmp/lib/tones/tone-440.wav
test -f "$root/usr/share/applications/earshot.desktop"
test -f "$root/usr/share/icons/hicolor/256x256/apps/earshot.png"
echo "the .deb installs and works in $root"
