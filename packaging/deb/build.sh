#!/usr/bin/env bash
# Builds agentbox_VERSION-1_ARCH.deb with dpkg-deb.
#
# Debian 12 has python3-libvirt and python3-yaml, but its python3-textual (0.1), -paramiko
# (2.12), -platformdirs (2.6), -pycdlib (1.12) and -cryptography (38) are older than agentbox
# needs, so the package carries its own venv in /usr/lib/agentbox, built here against the
# system python3.X it then depends on; libvirt-python is compiled against the system libvirt
# and dpkg-shlibdeps turns the venv's ELF files into the libvirt0/libc6 dependencies.
#
#   packaging/deb/build.sh [OUTDIR]        (default OUTDIR: dist/; prints the .deb's path)
#
# Needs dpkg-dev, python3-venv, python3-dev, gcc, pkg-config, libvirt-dev (all in
# scripts/setup.sh) and PyPI. Builds for the machine it runs on (Debian 12 → python3.11).
set -euo pipefail
umask 022

repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/packaging/deb"
outdir="$(mkdir -p "${1:-$repo/dist}" && cd "${1:-$repo/dist}" && pwd)"
prefix=/usr/lib/agentbox

for tool in dpkg-deb:dpkg dpkg-shlibdeps:dpkg-dev gcc:gcc pkg-config:pkg-config; do
  command -v "${tool%%:*}" >/dev/null || { echo "error: ${tool%%:*} not found (apt-get install ${tool#*:})" >&2; exit 1; }
done
# The system interpreter, by its versioned name: the venv must keep working if python3 moves on.
python="$(readlink -f /usr/bin/python3)"
pyver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
"$python" -c 'import ensurepip, venv' 2>/dev/null || { echo "error: apt-get install python3-venv" >&2; exit 1; }
pkg-config --exists libvirt || { echo "error: apt-get install libvirt-dev" >&2; exit 1; }
arch="$(dpkg --print-architecture)"
# Debian's usual variables name whoever builds the package.
maintainer="${DEBFULLNAME:-agentbox maintainers} <${DEBEMAIL:-agentbox@localhost}>"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stage="$work/root"

echo "== tools (build, argparse-manpage)" >&2
"$python" -m venv "$work/tools"
"$work/tools/bin/pip" install -q --disable-pip-version-check build "argparse-manpage>=4" >&2

echo "== sdist, then the wheel from the sdist" >&2
"$work/tools/bin/python" -m build -q --outdir "$work/dist" "$repo" >&2
wheel="$(ls "$work"/dist/agentbox_vm-*.whl)"
version="$(basename "$wheel" | cut -d- -f2)"
# PEP 440 pre-releases sort before the release in Debian only with a tilde (1.0rc1 → 1.0~rc1).
debversion="$(echo "$version" | sed -E 's/(a|b|rc|\.dev)([0-9]+)$/~\1\2/')-1"

echo "== venv in $prefix" >&2
"$python" -m venv --without-pip "$stage$prefix"
"$work/tools/bin/pip" --python "$stage$prefix/bin/python" install -q --no-compile \
  --no-warn-script-location --disable-pip-version-check "$wheel" >&2
# Keep only the interpreter links: pip's scripts and activate files name the build directory.
find "$stage$prefix/bin" -mindepth 1 ! -name 'python*' -delete
rm -rf "$stage$prefix/share" "$stage$prefix/include"  # pycdlib's man pages; empty headers dir
sed -i '/^command = /d' "$stage$prefix/pyvenv.cfg"
find "$stage$prefix" -name direct_url.json -delete

# The launcher calls what pyproject's [project.scripts] names, read back from the install.
read -r ep_module ep_attr < <("$stage$prefix/bin/python" -I -B -c 'from importlib.metadata import entry_points
(ep,) = entry_points(group="console_scripts", name="agentbox")
print(ep.module, ep.attr)')
[[ "$ep_attr" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "error: unsupported entry point $ep_module:$ep_attr" >&2; exit 1; }
install -d "$stage/usr/bin"
cat > "$stage/usr/bin/agentbox" <<EOF
#!$prefix/bin/python3 -IB
# agentbox from the Debian package: the venv in $prefix. -I: no PYTHONPATH or user site
# packages (often run with sudo); -B: byte code is shipped, never written next to it.
import sys
from $ep_module import $ep_attr
sys.exit($ep_attr())
EOF
chmod 0755 "$stage/usr/bin/agentbox"

echo "== man page and completion, from the packaged parser" >&2
run() { "$stage$prefix/bin/python" -I -B -m agentbox "$@"; }
install -d "$stage/usr/share/man/man1" "$stage/usr/share/bash-completion/completions" \
  "$stage/usr/share/zsh/vendor-completions" "$stage/usr/share/fish/vendor_completions.d"
"$work/tools/bin/pip" install -q --disable-pip-version-check --no-deps --target "$work/manpage" "argparse-manpage>=4" >&2
PYTHONPATH="$work/manpage" "$stage$prefix/bin/python" -B \
  -c 'import sys; from argparse_manpage.cli import main; sys.exit(main())' \
  --module agentbox.cli.main --function build_parser --prog agentbox --project-name agentbox \
  --version "$version" --manual-title "agentbox manual" --include "$here/agentbox.1.include" \
  --description "disposable local virtual machines as safe workspaces for AI agents" \
  --output "$work/agentbox.1"
gzip -9n < "$work/agentbox.1" > "$stage/usr/share/man/man1/agentbox.1.gz"
run completion bash > "$stage/usr/share/bash-completion/completions/agentbox"
run completion zsh > "$stage/usr/share/zsh/vendor-completions/_agentbox"
run completion fish > "$stage/usr/share/fish/vendor_completions.d/agentbox.fish"
[ "$(run --version)" = "agentbox $version" ]

install -D -m 0644 "$repo/packaging/polkit/50-agentbox-libvirt.rules" \
  "$stage/usr/share/polkit-1/rules.d/50-agentbox-libvirt.rules"
doc="$stage/usr/share/doc/agentbox"
install -D -m 0644 "$here/copyright" "$doc/copyright"
install -m 0644 "$repo/README.md" "$doc/README.md"
install -m 0644 "$repo/packaging/polkit/README.md" "$doc/README.polkit.md"
install -D -m 0644 "$here/lintian-overrides" "$stage/usr/share/lintian/overrides/agentbox"
printf 'agentbox (%s) unstable; urgency=medium\n\n  * Built from agentbox %s.\n\n -- %s  %s\n' \
  "$debversion" "$version" "$maintainer" "$(date -R)" | gzip -9n > "$doc/changelog.Debian.gz"

# Byte-compile with the final paths in the code objects; hash-checked, so dpkg's mtimes
# do not matter and an edited .py is still noticed.
"$python" -m compileall -q -j 0 --invalidation-mode checked-hash -s "$stage" -p / "$stage$prefix/lib" >&2
if grep -rlF "$work" "$stage" >&2; then echo "error: the files above name the build directory" >&2; exit 1; fi
# Relative, as Debian wants; only now, as inside $stage it points at nothing.
ln -sfn "../../../bin/python$pyver" "$stage$prefix/bin/python$pyver"

echo "== control" >&2
mapfile -t elves < <(find "$stage$prefix" -type f -name '*.so*' | sort)
install -d "$work/debian" "$stage/DEBIAN"
printf 'Source: agentbox\n\nPackage: agentbox\nArchitecture: any\n' > "$work/debian/control"
# Wheels from PyPI bring private copies of some libraries (name.libs/); their needs are the
# wheel's own business, so they only have to be found, not mapped to a package.
shlibs="$(cd "$work" && dpkg-shlibdeps -O --ignore-missing-info \
  $(find "$stage$prefix" -type d -name '*.libs' -printf '-l%p ') "${elves[@]}" 2>"$work/shlibdeps.log" \
  | sed -n 's/^shlibs:Depends=//p')" || { cat "$work/shlibdeps.log" >&2; exit 1; }
sed 's/^/  /' "$work/shlibdeps.log" >&2
[ -n "$shlibs" ] || { echo "error: dpkg-shlibdeps found no shared-library dependencies" >&2; exit 1; }
sed -e "s/@VERSION@/$debversion/" -e "s/@ARCH@/$arch/" -e "s/@PYTHON@/python$pyver/" \
  -e "s/@SHLIBS@/$shlibs/" -e "s|@MAINTAINER@|$maintainer|" -e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$stage" | cut -f1)/" \
  "$here/control.in" > "$stage/DEBIAN/control"
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"

deb="$outdir/agentbox_${debversion}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$deb"
