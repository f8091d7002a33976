# shellcheck shell=sh
# Run inside the confined container by ns_exec: sh -c "$(cat memory_hog.sh)" memory_hog BYTES
# tail keeps its whole input when it has no newline: it grows by BYTES of /dev/zero (a bound, should the
# limit be missing) until the kernel's OOM killer ends it at the cgroup's memory limit (status 137, SIGKILL).
head -c "$1" /dev/zero | tail > /dev/null
status=$?
printf '{"bytes": %d, "status": %d}\n' "$1" "$status"
