#!/usr/bin/env bash
# The talk without Ansible: what an instructor would write instead of site.yml. Plain ssh, every host in
# parallel, re-runnable the way people make shell scripts re-runnable (test -e / mountpoint -q / a pidfile).
# bench/run times it beside ansible-playbook; it is not part of the collection.
#
#   bench/handwritten.sh --archive BASE.tar.gz [--ssh-config FILE] HOST...    provision the talk
#   bench/handwritten.sh --reset [--ssh-config FILE] HOST...                  stop, unmount, remove /overlay
#
# BASE.tar.gz is the Debian base that the base_rootfs role builds on the controller
# (/var/cache/unboxed/base/debian-bookworm-*.tar.gz). It is streamed into lower1-base over the same ssh
# connection, only on hosts that do not have a base yet. Exit status: 0 when every host succeeded.
#
# It logs in as the ssh config's user, an unprivileged account as on a classroom's seat (root cannot log in),
# and runs everything as root through `sudo -n`, as the playbooks do through become: a sudo that would ask
# for a password fails at once rather than hang.
set -euo pipefail

usage() { sed -n '5,6s/^#   //p' "$0" >&2; exit 2; }

archive=""
ssh_config="${HOME}/.ssh/config"
mode=provision
while (($#)); do
    case "$1" in
        --archive) archive="$2"; shift 2 ;;
        --ssh-config) ssh_config="$2"; shift 2 ;;
        --reset) mode=reset; shift ;;
        -h | --help) usage ;;
        --) shift; break ;;
        -*) echo "handwritten.sh: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
(($#)) || usage
if [[ $mode == provision && ! -r $archive ]]; then
    echo "handwritten.sh: --archive must name the base archive (got '${archive}')" >&2
    exit 2
fi

run_ssh() { ssh -F "$ssh_config" -o BatchMode=yes "$@"; }
# HOST COMMAND: COMMAND (one string, run by the login shell on the host) as root, through sudo.
run_root() { run_ssh "$1" "sudo -n sh -c '$2'"; }

# The talk's slides, as one script run by bash on the host. Quoted heredoc: nothing expands here.
read -r -d '' talk <<'TALK' || true
set -eu
mkdir -p /overlay/lower2-file /overlay/upper /overlay/work /overlay/merged
echo "Texto" > /overlay/lower2-file/file01.txt
mountpoint -q /overlay/merged ||
    mount -t overlay overlay \
        -o lowerdir=/overlay/lower2-file:/overlay/lower1-base,upperdir=/overlay/upper,workdir=/overlay/work \
        /overlay/merged
# chroot is not isolation: the host's processes and interfaces
mountpoint -q /overlay/merged/proc || mount -t proc proc /overlay/merged/proc
chroot /overlay/merged ps ax
umount /overlay/merged/proc
chroot /overlay/merged ip addr
# CMD tail -f /dev/null, in its own PID, network and mount namespaces; once
if ! { [ -f /run/talk.pid ] && kill -0 "$(cat /run/talk.pid)" 2>/dev/null; }; then
    unshare --fork --pid --net --mount-proc=/overlay/merged/proc \
        chroot /overlay/merged tail -f /dev/null </dev/null >/dev/null 2>&1 &
    echo $! > /run/talk.pid
fi
TALK

read -r -d '' reset <<'RESET' || true
set -eu
if [ -f /run/talk.pid ]; then
    # tail is PID 1 of its namespace and ignores SIGTERM: kill it from outside, unshare then exits.
    pkill -KILL -P "$(cat /run/talk.pid)" || true
    while kill -0 "$(cat /run/talk.pid)" 2>/dev/null; do sleep 0.1; done
    rm -f /run/talk.pid
fi
if mountpoint -q /overlay/merged/proc; then umount /overlay/merged/proc; fi
if mountpoint -q /overlay/merged; then umount /overlay/merged; fi
rm -rf /overlay
RESET

provision() {
    local host=$1
    # FROM debian: unpack the base once (into a temporary name, so an interrupted copy is not taken for a base)
    if ! run_root "$host" 'test -e /overlay/lower1-base/etc/debian_version'; then
        run_root "$host" 'rm -rf /overlay/lower1-base.partial && mkdir -p /overlay/lower1-base.partial &&
            tar -xzf - --numeric-owner -C /overlay/lower1-base.partial &&
            mv /overlay/lower1-base.partial /overlay/lower1-base' <"$archive"
    fi
    run_ssh "$host" sudo -n bash -s <<<"$talk"
}

teardown() { run_ssh "$1" sudo -n bash -s <<<"$reset"; }

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
declare -A pids=()
for host in "$@"; do
    if [[ $mode == provision ]]; then
        provision "$host" >"$logs/$host" 2>&1 &
    else
        teardown "$host" >"$logs/$host" 2>&1 &
    fi
    pids[$host]=$!
done

failed=()
for host in "$@"; do
    if wait "${pids[$host]}"; then
        sed "s/^/${host}: /" "$logs/$host"
    else
        sed "s/^/${host}: /" "$logs/$host" >&2
        failed+=("$host")
    fi
done
if ((${#failed[@]})); then
    echo "handwritten.sh: failed on ${#failed[@]} of $# hosts: ${failed[*]}" >&2
    exit 1
fi
echo "handwritten.sh: ${mode} done on $# hosts"
