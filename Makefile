# awp: two entry points for a fresh Debian 12 machine, run as root:
#   make demo   full knock demo in throwaway network namespaces
#   make test   every test tier (unit, golden, backend, netns, package)
#   make deb    the Debian package, in build/
# Both run `make setup` first, which installs only what is missing.

PYTHON   ?= python3
VENV     := .venv
DEB_PKGS := iptables ipset nftables iproute2 kmod telnet netcat-openbsd knockd nmap socat \
            shellcheck man-db groff-base openssl procps python3-venv systemd fail2ban \
            lintian dpkg-dev tmux python3-configobj python3-rich python3-iptables libnftables1 logrotate \
            redis-server python3-redis fwknop-server fwknop-client

.PHONY: setup .setup-deb demo test lint bench clean deb

setup: .setup-deb $(VENV)/.installed

.setup-deb:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

demo: setup
	$(VENV)/bin/python demo/demo.py

test: setup
	$(VENV)/bin/pytest -q -ra

lint: setup
	shellcheck client/knock.sh bin/awp packaging/debian/build.sh packaging/debian/postinst packaging/debian/prerm \
	  packaging/debian/postrm tests/package/install.sh tests/netns/unit_sandbox.sh \
	  etc/bash_completion.d/awp
	for m in man/*.[0-9]; do man --warnings -l $$m >/dev/null; done

# The Debian package (packaging/debian/README.md): build/awp_VERSION_all.deb
deb: .setup-deb
	sh packaging/debian/build.sh build
	lintian --pedantic --fail-on error,warning build/awp_*_all.deb

# The issue-6 figures, one script each (bench/README.md); make bench BENCH_FLAGS=--quick
BENCHES     := capacity flood latency cost load memory
BENCH_FLAGS ?=
bench: setup
	@for b in $(BENCHES); do $(VENV)/bin/python bench/$${b}_bench.py $(BENCH_FLAGS) || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
