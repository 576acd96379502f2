#!/bin/sh
# Build the awp .deb with dpkg-deb from this checkout: packaging/debian/build.sh OUTDIR
# Prints the path of the .deb. What goes where: README.Debian; why: README.md.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/build}
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/awp/__init__.py")
[ -n "$version" ] || { echo "build.sh: no __version__ in awp/__init__.py" >&2; exit 1; }
# Reproducible: file times and the changelog date come from the last commit, not the clock.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH

mkdir -p "$out"
stage=$(mktemp -d "$out/stage.XXXXXX")
chmod 755 "$stage"
trap 'rm -rf "$stage"' EXIT
umask 022
doc=$stage/usr/share/doc/awp

# The program: the package's modules where Debian's python3 finds them, and a launcher.
install -d "$stage/usr/lib/python3/dist-packages" "$stage/usr/sbin" "$stage/usr/bin"
(cd "$repo" && find awp -type f \( -name '*.py' -o -name 'configspec.ini' \) -not -path '*/__pycache__/*') |
	sort | while read -r f; do install -D -m 644 "$repo/$f" "$stage/usr/lib/python3/dist-packages/$f"; done
install -m 755 "$here/awp.launcher" "$stage/usr/sbin/awp"
install -m 755 "$repo/client/knock.sh" "$stage/usr/bin/knock.sh"

# Man pages, compressed as Debian policy asks (gzip -9n: no name or time in the header).
for page in "$repo"/man/*.[0-9]; do
	section=${page##*.}
	install -d "$stage/usr/share/man/man$section"
	gzip -9nc "$page" > "$stage/usr/share/man/man$section/$(basename "$page").gz"
	chmod 644 "$stage/usr/share/man/man$section/$(basename "$page").gz"
done

# systemd units, run from where this package installs awp.
install -d "$stage/lib/systemd/system"
for unit in "$repo"/etc/systemd/*.service; do
	sed 's#/usr/local/bin/awp#/usr/sbin/awp#g' "$unit" > "$stage/lib/systemd/system/$(basename "$unit")"
	chmod 644 "$stage/lib/systemd/system/$(basename "$unit")"
done

# The example configuration: conffiles in /etc/awp, found through the documented root.
install -d "$stage/etc/awp/firewall" "$stage/var/awp/var"
install -m 644 "$repo/etc/config" "$stage/etc/awp/config"
install -m 644 "$repo/etc/firewall/simple-portknock-list" "$stage/etc/awp/firewall/"
install -m 600 "$repo/etc/firewall/advanced-portknock-list" "$stage/etc/awp/firewall/"
ln -s /etc/awp "$stage/var/awp/etc"
conffiles=$(cat "$here/conffiles.in")

# The fail2ban filter (and jail), if this checkout has one: etc/fail2ban/ is /etc/fail2ban/.
if [ -d "$repo/etc/fail2ban" ]; then
	(cd "$repo/etc" && find fail2ban -type f | sort) | while read -r f; do
		install -D -m 644 "$repo/etc/$f" "$stage/etc/$f"
	done
	conffiles="$conffiles
$(cd "$repo/etc" && find fail2ban -type f | sort | sed 's#^#/etc/#')"
fi

# Documentation.
install -d "$doc"
install -m 644 "$here/copyright" "$doc/copyright"
install -m 644 "$here/README.Debian" "$doc/README.Debian"
date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
sed -e "s/@VERSION@/$version/" -e "s/@DATE@/$date/" "$here/changelog.in" | gzip -9n > "$doc/changelog.gz"
chmod 644 "$doc/changelog.gz"
install -d "$stage/usr/share/lintian/overrides"
install -m 644 "$here/lintian-overrides" "$stage/usr/share/lintian/overrides/awp"

# Control area.
install -d "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" "$here/control.in" > "$stage/DEBIAN/control"
printf '%s\n' "$conffiles" > "$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do install -m 755 "$here/$script" "$stage/DEBIAN/$script"; done
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -print | sed 's#^\./##' | sort | xargs md5sum) \
	> "$stage/DEBIAN/md5sums"
chmod 644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb=$out/awp_${version}_all.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
