# shellcheck shell=sh
# Run inside a container by ns_exec: sh -c "$(cat blocked_calls.sh)" blocked_calls
# The Seccomp and NoNewPrivs lines of the container's PID 1 in /proc/1/status (Seccomp 2: a filter), then
# unshare(CLONE_NEWUSER): the kernel lets any process, root or not, make a user namespace (outside a chroot),
# so only a seccomp filter refuses it - Docker's profile allows unshare only with CAP_SYS_ADMIN, and answers
# every other caller EPERM. One JSON line.
json_text() { printf '%s' "$1" | tr '\n\t\r' '   ' | tr -s ' ' | sed 's/\\/\\\\/g; s/"/\\"/g'; }
seccomp=-1 no_new_privs=-1
while read -r field value; do
  case "$field" in
    Seccomp:) seccomp=$value ;;
    NoNewPrivs:) no_new_privs=$value ;;
  esac
done < /proc/1/status
unshare_out=$(unshare --user true 2>&1)
unshare_rc=$?
printf '{"seccomp": %d, "no_new_privs": %d, "unshare_rc": %d, "unshare": "%s"}\n' \
  "$seccomp" "$no_new_privs" "$unshare_rc" "$(json_text "$unshare_out")"
