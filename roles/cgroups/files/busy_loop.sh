# shellcheck shell=sh
# Run inside the confined container by ns_exec: sh -c "$(cat busy_loop.sh)" busy_loop SECONDS LOOPS
# LOOPS busy loops side by side for SECONDS of wall time - they ask for LOOPS CPUs, more than the quota, so
# the cgroup is throttled in every period even on a busy machine - then the CPU time they got, from the
# children's user and system time in /proc/$$/stat (fields 16 and 17, in clock ticks of 1/100 s): at cpus 0.5,
# at most about half of SECONDS.
i=0
while [ "$i" -lt "$2" ]; do
  timeout "$1" sh -c 'while :; do :; done' &
  i=$((i + 1))
done
wait
read -r stat < "/proc/$$/stat"
# shellcheck disable=SC2086  # split on purpose: the fields after the command name become $3, $4...
set -- "$1" "$2" ${stat#*) }
printf '{"seconds": %d, "loops": %d, "cpu_ticks": %d}\n' "$1" "$2" "$((${16} + ${17}))"
