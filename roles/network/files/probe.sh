# shellcheck shell=bash
# Run inside the client container by ns_exec: bash -c "$(cat probe.sh)" probe WEB_ADDRESS WEB_PORT GATEWAY GATEWAY_PORT
# Prints one JSON line: the last line of the web container's answer to a GET (bash's /dev/tcp: minbase has no nc
# or curl), how the seat's bridge address answered a connection to GATEWAY_PORT ("open", or "refused" - refused by
# the seat's own kernel, which shows the address reached just as well; "no answer" after 5 s), and this
# container's interfaces from /proc/net/dev.
# shellcheck disable=SC2016  # expanded by the inner bash, from its own $0 and $1
web=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "GET / HTTP/1.0\r\n\r\n" >&3 && cat <&3' "$1" "$2" 2>/dev/null | tail -n 1)
# shellcheck disable=SC2016  # the same
error=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$3" "$4" 2>&1)
case $? in
  0) gateway=open ;;
  124) gateway="no answer" ;;
  *) case $error in *refused*) gateway=refused ;; *) gateway="no answer" ;; esac ;;
esac
interfaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')
printf '{"web": "%s", "gateway": "%s", "interfaces": "%s"}\n' "${web//\"/}" "$gateway" "${interfaces% }"
