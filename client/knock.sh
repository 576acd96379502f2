#!/usr/bin/env bash
# knock.sh: send one awp advanced-mode knock (xt_pknock UDP-mode one-time password).
#
# payload = lowercase hex HMAC-SHA256(key = secret (UTF-8 bytes),
#                                     msg = source address (4 or 16 bytes, network order)
#                                           + uint32 little-endian minutes since the epoch)
#           followed by one newline: 65 bytes, sent as one UDP datagram.
#
# Needs bash >= 4.2, openssl and od. The secret never reaches a command line: the HMAC
# (RFC 2104) is computed here and openssl only hashes what is piped into it. Arguments are
# <dst> <port> <secret>, as in the AEO documentation; xtables-addons' knock.sh takes
# <src> <dst> <port> <secret>, here the source comes from the kernel (or -s).
# See knock.sh(1).

set -u
set -o pipefail
export LC_ALL=C

PROG=${0##*/}
readonly PROG
readonly EX_FAIL=1 EX_USAGE=2
readonly MAX_EPOCH=257698037759 # 2^32 minutes - 1 second
readonly MAX_REPEAT=5 REPEAT_GAP=0.4 # -r: at most 5 copies, all sent within 1.6 s

usage() {
	cat <<EOF
usage: $PROG [-4 | -6] [-s ADDR] [-t EPOCH] [-r COUNT] [-n] [-w PORT [-W SECONDS] [-T TRIES]]
       <dst> <knock port> <secret | ->

Send one one-time password for awp's advanced mode (xt_pknock UDP mode).

  -s ADDR   source address the server sees (behind NAT: the public address);
            default: the address the kernel uses towards <dst> (from ip route get,
            else python3, else /proc/net/udp)
  -4, -6    use IPv4 / IPv6 only (to resolve a host name)
  -t EPOCH  use this time (seconds since the epoch) instead of now
  -r COUNT, --repeat COUNT
            send the datagram COUNT times (1-$MAX_REPEAT, default 1), $REPEAT_GAP s apart, in case
            one is lost (a flood at the server); the server grants once
  -n        dry run: print the MAC on stdout, the source on stderr; send nothing
  -w PORT, --wait PORT
            after the knock, try a TCP connect to PORT of <dst> until it answers;
            exit 0 only if it does (needs timeout(1) from coreutils)
  -W SECONDS, --wait-timeout SECONDS
            with -w: give up after SECONDS in all (1-600, default 10)
  -T TRIES, --tries TRIES
            with -w: knock up to TRIES times (1-20, default 3), spread over the
            timeout; each knock is computed afresh (a lost datagram is resent)
  -h        show this help

A secret of '-' is read from the first line of standard input, which keeps it
out of ps and the shell history. Exit status: 0 sent (with -w: the port
answered), 1 failure (with -w: the port did not answer in time), 2 usage error.
EOF
}

fail() {
	printf '%s: error: %s\n' "$PROG" "$1" >&2
	exit "$EX_FAIL"
}

usage_error() {
	printf '%s: error: %s\n' "$PROG" "$1" >&2
	printf "Try '%s -h' for help.\n" "$PROG" >&2
	exit "$EX_USAGE"
}

# --- addresses: each parser sets REPLY to the address bytes in hex ----------------------

ipv4_hex() {
	local octet='(0|[1-9][0-9]{0,2})' i h
	local re="^$octet\\.$octet\\.$octet\\.$octet\$"
	[[ $1 =~ $re ]] || return 1
	REPLY=
	for i in 1 2 3 4; do
		((BASH_REMATCH[i] <= 255)) || return 1
		printf -v h '%02x' "${BASH_REMATCH[i]}"
		REPLY+=$h
	done
}

# "a:b:c" -> REPLY = groups as 4 hex digits each, NGROUPS = their count ("" -> 0 groups).
ipv6_groups() {
	local g h
	local -a parts
	REPLY='' NGROUPS=0
	[[ -z $1 ]] && return 0
	[[ $1 =~ ^[0-9a-f]{1,4}(:[0-9a-f]{1,4})*$ ]] || return 1
	IFS=: read -ra parts <<<"$1"
	for g in "${parts[@]}"; do
		printf -v h '%04x' "$((16#$g))"
		REPLY+=$h
		NGROUPS=$((NGROUPS + 1))
	done
}

# Literal IPv6 address, optionally with an embedded IPv4 tail and a %zone (ignored here).
ipv6_hex() {
	local a=${1,,} head tail n
	[[ $a == *%* ]] && { [[ ${a#*%} =~ ^[a-z0-9_.-]+$ ]] || return 1; }
	a=${a%%\%*}
	[[ $a == *:* ]] || return 1
	if [[ $a == *.* ]]; then
		ipv4_hex "${a##*:}" || return 1
		a="${a%:*}:${REPLY:0:4}:${REPLY:4:4}"
	fi
	if [[ $a != *::* ]]; then
		ipv6_groups "$a" && ((NGROUPS == 8))
		return
	fi
	tail=${a#*::}
	[[ $tail != *::* ]] || return 1
	ipv6_groups "${a%%::*}" || return 1
	head=$REPLY n=$NGROUPS
	ipv6_groups "$tail" || return 1
	((n + NGROUPS <= 7)) || return 1
	printf -v n '%*s' $(((8 - n - NGROUPS) * 4)) ''
	REPLY=$head${n// /0}$REPLY
}

is_v4_mapped() {
	[[ $1 == 00000000000000000000ffff* ]]
}

# --- destination and source ------------------------------------------------------------

# Sets DST (a literal address) and FAMILY (4 or 6) from the <dst> argument.
resolve_dst() {
	local want=$1 dst=$2
	if ipv4_hex "$dst"; then
		FAMILY=4
	elif [[ $dst == *:* ]]; then
		ipv6_hex "$dst" || usage_error "invalid IPv6 address: $dst"
		is_v4_mapped "$REPLY" && usage_error "IPv4-mapped address: use the IPv4 address"
		FAMILY=6
	elif [[ $dst =~ ^[0-9.]+$ ]]; then
		usage_error "invalid IPv4 address: $dst"
	elif [[ $dst =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$ ]]; then
		resolve_name "$want" "$dst"
		return
	else
		usage_error "invalid destination: $dst"
	fi
	[[ -z $want || $want == "$FAMILY" ]] || usage_error "$dst is not an IPv$want address"
	DST=$dst
}

resolve_name() {
	local want=$1 name=$2 db=ahosts out addr
	[[ -n $want ]] && db=ahostsv$want
	command -v getent >/dev/null || fail "getent not found; give <dst> as an address"
	out=$(getent "$db" "$name") || fail "cannot resolve $name"
	addr=${out%%[[:space:]]*}
	if ipv4_hex "$addr"; then
		FAMILY=4
	elif ipv6_hex "$addr" && ! is_v4_mapped "$REPLY"; then
		FAMILY=6
	else
		fail "no usable IPv${want:-4/6} address for $name"
	fi
	DST=$addr
}

# Sets SRC to the address the kernel would use towards DST: asks `ip route get`, else
# python3, else reads it back from a connected UDP socket in /proc/net/udp. A connected UDP
# socket has its source chosen by the kernel's routing and sends nothing.
route_src() {
	local fam=$1 dst=$2
	if command -v ip >/dev/null; then
		ip_route_src "$fam" "$dst"
	elif command -v python3 >/dev/null; then
		python3_src "$fam" "$dst"
	elif [[ -r /proc/net/udp ]]; then
		proc_src "$fam" "$dst"
	else
		fail "cannot find the source address towards $dst (no ip, python3 or /proc); give it with -s"
	fi
}

ip_route_src() {
	local fam=$1 dst=$2 out i
	local -a cmd words
	cmd=(ip "-$fam" route get "${dst%%\%*}")
	[[ $dst == *%* ]] && cmd+=(oif "${dst#*%}")
	out=$("${cmd[@]}" 2>/dev/null) || fail "no route to $dst"
	read -ra words <<<"$out"
	for ((i = 0; i + 1 < ${#words[@]}; i++)); do
		[[ ${words[i]} == src ]] && SRC=${words[i + 1]} && return 0
	done
	fail "no source address towards $dst; give it with -s"
}

python3_src() {
	local fam=$1 dst=$2
	# shellcheck disable=SC2016 # $-free Python, single-quoted on purpose
	SRC=$(python3 -c '
import socket, sys
family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
with socket.socket(family, socket.SOCK_DGRAM) as s:
    s.connect((sys.argv[2], 9))
    print(s.getsockname()[0].split("%")[0])
' "$fam" "$dst" 2>/dev/null) || fail "no route to $dst"
	[[ -n $SRC ]] || fail "no source address towards $dst; give it with -s"
}

# bash connects a socket it opens on /dev/udp; its local address is in /proc/net/udp{,6}, in
# the host's byte order (each 32-bit word).
proc_src() {
	local fam=$1 dst=$2 fd inode table=/proc/net/udp hex=''
	((fam == 6)) && table=/proc/net/udp6
	{ exec {fd}>"/dev/udp/$dst/9"; } 2>/dev/null || fail "no route to $dst"
	inode=$(readlink "/proc/$$/fd/$fd") || inode=
	inode=${inode#socket:[} inode=${inode%]}
	[[ $inode =~ ^[0-9]+$ ]] && hex=$(proc_local_hex "$table" "$inode")
	exec {fd}>&-
	[[ -n $hex ]] || fail "cannot read the source address towards $dst; give it with -s"
	if ((fam == 4)); then
		printf -v SRC '%d.%d.%d.%d' "0x${hex:0:2}" "0x${hex:2:2}" "0x${hex:4:2}" "0x${hex:6:2}"
	else
		SRC=$(hex_to_ipv6 "$hex")
	fi
}

# $1 table, $2 socket inode -> stdout: the local address bytes in hex, network order.
proc_local_hex() {
	local -a cols
	local word out='' i
	while read -ra cols; do
		[[ ${cols[9]:-} == "$2" ]] || continue
		for ((i = 0; i < ${#cols[1]} - 5; i += 8)); do
			word=${cols[1]:i:8}
			host_is_little_endian && word=${word:6:2}${word:4:2}${word:2:2}${word:0:2}
			out+=$word
		done
		printf '%s\n' "${out,,}"
		return 0
	done <"$1"
	return 1
}

host_is_little_endian() {
	[[ $(printf '\001\000' | od -An -tu2) == *' 1' ]]
}

hex_to_ipv6() {
	local hex=$1 out='' i
	for ((i = 0; i < 32; i += 4)); do
		printf -v out '%s%x:' "$out" "0x${hex:i:4}"
	done
	printf '%s\n' "${out%:}"
}

# Sets ADDR_HEX to the bytes of SRC; SRC must be of family $1.
source_bytes() {
	local fam=$1 ok=1
	if ((fam == 4)); then
		ipv4_hex "$SRC" && ok=0
	else
		ipv6_hex "$SRC" && ! is_v4_mapped "$REPLY" && ok=0
	fi
	((ok == 0)) || usage_error "source $SRC is not a usable IPv$fam address (the destination is IPv$fam)"
	ADDR_HEX=$REPLY
}

# --- HMAC-SHA256 (RFC 2104), the key never leaves this shell ----------------------------

hex_to_bytes() {
	local hex=$1 esc='' i
	for ((i = 0; i < ${#hex}; i += 2)); do
		esc+="\\x${hex:i:2}"
	done
	printf '%b' "$esc"
}

# stdin -> stdout: SHA-256 in lowercase hex.
sha256_hex() {
	local out
	out=$(openssl dgst -sha256 -r) || return 1
	out=${out%% *}
	[[ $out =~ ^[0-9a-f]{64}$ ]] || return 1
	printf '%s\n' "$out"
}

# $1 key (hex), $2 message (hex) -> stdout: HMAC-SHA256 in lowercase hex.
hmac_sha256() {
	local key=$1 msg=$2 ipad='' opad='' inner i b h
	if ((${#key} > 128)); then
		key=$(hex_to_bytes "$key" | sha256_hex) || return 1
	fi
	printf -v h '%*s' $((128 - ${#key})) ''
	key+=${h// /0}
	for ((i = 0; i < 128; i += 2)); do
		b=$((16#${key:i:2}))
		printf -v h '%02x' $((b ^ 0x36))
		ipad+=$h
		printf -v h '%02x' $((b ^ 0x5c))
		opad+=$h
	done
	inner=$(hex_to_bytes "$ipad$msg" | sha256_hex) || return 1
	hex_to_bytes "$opad$inner" | sha256_hex
}

# $1 secret -> stdout: its UTF-8 bytes in hex (printf is a builtin: no command line).
secret_hex() {
	local hex
	hex=$(printf '%s' "$1" | od -An -v -tx1) || return 1
	hex=${hex//[[:space:]]/}
	printf '%s\n' "$hex"
}

minute_le_hex() {
	local m=$(($1 / 60))
	printf '%02x%02x%02x%02x\n' $((m & 255)) $((m >> 8 & 255)) $((m >> 16 & 255)) $((m >> 24 & 255))
}

# --- main --------------------------------------------------------------------------------

read_secret() {
	local secret=$1
	if [[ $secret == - ]]; then
		secret=
		if [[ -t 0 ]]; then
			IFS= read -rsp 'secret: ' secret
			printf '\n' >&2
		else
			IFS= read -r secret
		fi
	fi
	[[ -n $secret ]] || usage_error "the secret is empty"
	SECRET=$secret
}

check_port() { # $1 port, $2 what it is (default: knock port)
	if ! [[ $1 =~ ^[0-9]{1,5}$ ]] || ((10#$1 < 1 || 10#$1 > 65535)); then
		usage_error "${2:-knock port} must be 1-65535, got '$1'"
	fi
}

check_repeat() {
	if ! [[ $1 =~ ^[0-9]{1,2}$ ]] || ((10#$1 < 1 || 10#$1 > MAX_REPEAT)); then
		usage_error "-r wants a count of 1-$MAX_REPEAT, got '$1'"
	fi
}

check_time() {
	if ! [[ $1 =~ ^[0-9]{1,12}$ ]] || ((10#$1 > MAX_EPOCH)); then
		usage_error "-t wants seconds since the epoch (0-$MAX_EPOCH), got '$1'"
	fi
}

send() {
	local dst=$1 port=$2 payload=$3
	printf '%s\n' "$payload" 2>/dev/null >"/dev/udp/$dst/$((10#$port))" ||
		fail "could not send to $dst port $port"
}

# Sets ARGS to "$@" with the long options spelled as their short ones and moved before
# the arguments (short options must come first, as getopts wants; a secret such as "-n"
# after <dst> stays an argument).
long_options() {
	local -a opts=() args=()
	while (($#)); do
		case $1 in
		--wait | --wait-timeout | --tries | --repeat)
			(($# >= 2)) || usage_error "option $1 needs a value"
			opts+=("$(short_of "$1")" "$2")
			shift
			;;
		--wait=* | --wait-timeout=* | --tries=* | --repeat=*) opts+=("$(short_of "${1%%=*}")" "${1#*=}") ;;
		*)
			if ((${#args[@]})) || [[ $1 == - || $1 != -* ]]; then
				args+=("$1")
			elif [[ $1 == -- ]]; then
				shift
				args+=("$@")
				break
			elif [[ $1 == --* ]]; then
				usage_error "unknown option $1"
			elif [[ $1 =~ ^-[46nh]*[stwWTr]$ ]] && (($# >= 2)); then
				opts+=("$1" "$2")
				shift
			else
				opts+=("$1")
			fi
			;;
		esac
		shift
	done
	ARGS=("${opts[@]}" -- "${args[@]}")
}

short_of() {
	case $1 in
	--wait) printf '%s\n' -w ;;
	--wait-timeout) printf '%s\n' -W ;;
	--tries) printf '%s\n' -T ;;
	--repeat) printf '%s\n' -r ;;
	esac
}

check_count() { # $1 option, $2 value, $3 max
	if ! [[ $2 =~ ^[0-9]{1,3}$ ]] || ((10#$2 < 1 || 10#$2 > $3)); then
		usage_error "$1 must be 1-$3, got '$2'"
	fi
}

# One knock: a MAC for the time given with -t, else for now.
knock_once() {
	local now=$FIXED_TIME mac
	[[ -n $now ]] || printf -v now '%(%s)T' -1
	mac=$(hmac_sha256 "$KEY_HEX" "$ADDR_HEX$(minute_le_hex "$now")") || fail "openssl failed"
	if ((DRY)); then
		printf '%s\n' "$mac"
		printf '%s: source address %s\n' "$PROG" "$SRC" >&2
		return 0
	fi
	local i
	for ((i = 1; i <= REPEAT; i++)); do
		((i == 1)) || sleep "$REPEAT_GAP"
		send "$DST" "$PORT" "$mac"
	done
}

# True iff a TCP connect to $1 port $2 completes within $3 seconds.
tcp_answers() {
	# shellcheck disable=SC2016 # the inner bash expands $0 and $1
	timeout -k 1 "$3" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# Sets NOW_MS: the wall clock in milliseconds (bash 5's EPOCHREALTIME, else whole seconds).
now_ms() {
	local t=${EPOCHREALTIME:-}
	t=${t/,/.}
	if [[ $t =~ ^([0-9]+)\.([0-9]{3}) ]]; then
		NOW_MS=$((BASH_REMATCH[1] * 1000 + 10#${BASH_REMATCH[2]}))
	else
		printf -v t '%(%s)T' -1
		NOW_MS=$((t * 1000))
	fi
}

# Knock, then try the port for this try's share of the time left; up to TRIES knocks.
knock_and_wait() {
	local port=$1 total=$2 tries=$3 n end slice_end left
	now_ms
	end=$((NOW_MS + total * 1000))
	for ((n = 1; n <= tries; n++)); do
		knock_once
		now_ms
		slice_end=$((NOW_MS + (end - NOW_MS) / (tries - n + 1)))
		while ((NOW_MS < slice_end)); do
			left=$((slice_end - NOW_MS))
			printf -v left '%d.%03d' $((left / 1000)) $((left % 1000))
			if tcp_answers "$DST" "$port" "$left"; then
				printf '%s: TCP port %s of %s answers (after %d knock(s))\n' "$PROG" "$port" "$DST" "$n" >&2
				return 0
			fi
			now_ms
			((slice_end - NOW_MS > 200)) && sleep 0.2
			now_ms
		done
	done
	fail "TCP port $port of $DST did not answer within $total s after $tries knock(s)"
}

main() {
	local opt want='' wait='' total=10 tries=3
	SRC='' DRY=0 FIXED_TIME='' REPEAT=1
	long_options "$@"
	set -- "${ARGS[@]}"
	OPTIND=1
	while getopts ':s:46t:r:nw:W:T:h' opt; do
		case $opt in
		s) SRC=$OPTARG ;;
		w) check_port "$OPTARG" "-w/--wait port" && wait=$((10#$OPTARG)) ;;
		W) check_count "-W/--wait-timeout" "$OPTARG" 600 && total=$((10#$OPTARG)) ;;
		T) check_count "-T/--tries" "$OPTARG" 20 && tries=$((10#$OPTARG)) ;;
		4 | 6)
			[[ -z $want || $want == "$opt" ]] || usage_error "-4 and -6 exclude each other"
			want=$opt
			;;
		t) check_time "$OPTARG" && FIXED_TIME=$((10#$OPTARG)) ;;
		r) check_repeat "$OPTARG" && REPEAT=$((10#$OPTARG)) ;;
		n) DRY=1 ;;
		h) usage && exit 0 ;;
		:) usage_error "option -$OPTARG needs a value" ;;
		*) usage_error "unknown option -$OPTARG" ;;
		esac
	done
	shift $((OPTIND - 1))
	(($# == 3)) || usage_error "expected <dst> <knock port> <secret>, got $# argument(s)"
	PORT=$2
	check_port "$PORT"
	((DRY && ${#wait})) && usage_error "-n sends nothing: it does not go with -w"
	resolve_dst "$want" "$1"
	read_secret "$3"
	command -v openssl >/dev/null || fail "openssl not found"
	command -v od >/dev/null || fail "od not found"
	[[ -z $wait ]] || command -v timeout >/dev/null || fail "timeout (coreutils) not found; -w needs it"
	[[ -n $SRC ]] || route_src "$FAMILY" "$DST"
	source_bytes "$FAMILY"
	KEY_HEX=$(secret_hex "$SECRET") || fail "cannot read the secret"
	unset SECRET
	if [[ -n $wait ]]; then
		knock_and_wait "$wait" "$total" "$tries"
	else
		knock_once
	fi
}

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 2))); then
	printf '%s: error: bash 4.2 or newer is needed\n' "$PROG" >&2
	exit "$EX_FAIL"
fi
main "$@"
