#!/bin/sh
# Run by tests/package/test_deb.py inside `unshare --mount --net`: a throwaway root made of
# overlays (tmpfs upper layers) on /usr, /etc and /var, so dpkg really installs, configures,
# removes and purges the package on this system's own dpkg database and Python, and all of
# it vanishes with the mount namespace. The network namespace is new and empty, so
# `awp -s -f` loads rules into it only. Usage: install.sh DEB SCRATCH OUT
set -u
deb=$1 scratch=$2 out=$3

mount -t tmpfs awp-scratch "$scratch" || exit 90
for d in usr etc var; do
	mkdir -p "$scratch/$d.upper" "$scratch/$d.work"
	mount -t overlay overlay -o "lowerdir=/$d,upperdir=$scratch/$d.upper,workdir=$scratch/$d.work" "/$d" || exit 91
done
# No systemd of the host to talk to: postinst's daemon-reload is for a real install.
mount -t tmpfs awp-run /run || exit 92

cd / || exit 93  # not the checkout: python3 -c and -m put the working directory on sys.path
export PATH=/usr/sbin:/usr/bin:/sbin:/bin MANWIDTH=80 LC_ALL=C.UTF-8
step() { name=$1; shift; "$@" > "$out/$name.out" 2> "$out/$name.err"; echo $? > "$out/$name.rc"; }

# Container images exclude man pages and docs from dpkg; a real machine does not.
step install dpkg -i --path-include='/usr/share/man/*' --path-include='/usr/share/doc/awp/*' "$deb"
step module python3 -c 'import awp, sys; print(awp.__file__); print(sys.executable)'
step version awp --version
step check awp check
sed -i 's/^FW_PORTKNOCK_ADVANCED="no"/FW_PORTKNOCK_ADVANCED="yes"/' /etc/awp/config
step check_advanced awp check
sed -i 's/^FW_PORTKNOCK_ADVANCED="yes"/FW_PORTKNOCK_ADVANCED="no"/' /etc/awp/config
step apply awp -s -f
step status awp status
step watch timeout --preserve-status -s INT 2.5 awp status --watch --interval 1
step man man -P cat awp
step man_where man -w awp awp-portknock-list knock.sh
step man_lint man --warnings -l /usr/share/man/man8/awp.8.gz
step knock_help knock.sh -h
step verify systemd-analyze verify --man=no /lib/systemd/system/awp.service /lib/systemd/system/awp-knockd.service
step files dpkg -L awp
step pycache find /usr/lib/python3/dist-packages/awp -name '*.pyc'
echo "# edited by the test" >> /etc/awp/config
step remove dpkg -r awp
step after_remove sh -c 'ls /usr/sbin/awp /usr/lib/python3/dist-packages/awp 2>&1; ls /etc/awp/config; tail -1 /etc/awp/config'
step purge dpkg -P awp
step after_purge sh -c 'ls -d /etc/awp /var/awp 2>&1; dpkg-query -W awp 2>&1'
exit 0
