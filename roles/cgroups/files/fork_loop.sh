# shellcheck shell=sh
# Run inside the confined container by ns_exec: sh -c "$(cat fork_loop.sh)" fork_loop COUNT
# Starts up to COUNT sleeping processes, one by one, until fork fails at the cgroup's pids.max. The trap
# (dash runs it when a failed fork ends the shell) uses shell builtins only, as nothing can fork while
# the cgroup is full: it kills the sleepers and waits for them, so no zombie is left to the container's
# PID 1 (tail, which never reaps), and prints one JSON line.
i=0
pids=
trap 'kill $pids 2>/dev/null; wait; printf "{\"asked\": %d, \"forked\": %d}\n" "$1" "$i"; exit 0' EXIT
while [ "$i" -lt "$1" ]; do
  sleep 60 &
  pids="$pids $!"
  i=$((i + 1))
done
