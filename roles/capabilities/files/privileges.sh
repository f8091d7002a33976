# shellcheck shell=sh
# Run inside a container by ns_exec: sh -c "$(cat privileges.sh)" privileges [DEV]
# The capabilities of the container's PID 1 as /proc/1/status shows them (and whether CAP_SYS_ADMIN, bit 21, and
# CAP_MKNOD, bit 27, are among the effective ones), then what root in the container can do with the seat's disk,
# without writing a byte into the container's image: mount a scratch tmpfs on /mnt (CAP_SYS_ADMIN); with DEV, the
# seat's root file system's device number (st_dev of / on the seat), make a block device node for the disk in
# it (CAP_MKNOD) and mount the disk (CAP_SYS_ADMIN again), listing its top directory. Everything is undone
# before the end; -n writes no /run/mount/utab. One JSON line.
json_text() { printf '%s' "$1" | tr '\n\t\r' '   ' | tr -s ' ' | sed 's/\\/\\\\/g; s/"/\\"/g'; }
cap_eff=0 cap_bnd=0
while read -r field value; do
  case "$field" in
    CapEff:) cap_eff=$value ;;
    CapBnd:) cap_bnd=$value ;;
  esac
done < /proc/1/status
device='' mknod_rc=-1 mknod_out='' mount_rc=-1 mount_out='' listing=''
scratch_out=$(mount -n -t tmpfs -o size=64k,mode=700 unboxed-scratch /mnt 2>&1)
scratch_rc=$?
if [ "$scratch_rc" -eq 0 ]; then
  if [ -n "${1:-}" ]; then
    major=$(( ($1 >> 8) & 0xfff ))
    minor=$(( ($1 & 0xff) | (($1 >> 12) & 0xfff00) ))
    device=$major:$minor
    mknod_out=$(mknod /mnt/disk b "$major" "$minor" 2>&1)
    mknod_rc=$?
    if [ "$mknod_rc" -eq 0 ] && mkdir /mnt/root; then
      mount_out=$(mount -n /mnt/disk /mnt/root 2>&1)
      mount_rc=$?
      if [ "$mount_rc" -eq 0 ]; then
        # shellcheck disable=SC2012  # a listing for the eye, as the student types it
        listing=$(ls /mnt/root | head -n 12)
        umount -n /mnt/root
      fi
    fi
  fi
  umount -n /mnt
fi
printf '{"cap_eff": "%s", "cap_bnd": "%s", "sys_admin": %d, "mknod_capability": %d, ' \
  "$cap_eff" "$cap_bnd" "$(( (0x$cap_eff >> 21) & 1 ))" "$(( (0x$cap_eff >> 27) & 1 ))"
printf '"scratch_rc": %d, "scratch": "%s", "device": "%s", "mknod_rc": %d, "mknod": "%s", "mount_rc": %d, "mount": "%s", "listing": "%s"}\n' \
  "$scratch_rc" "$(json_text "$scratch_out")" "$device" "$mknod_rc" "$(json_text "$mknod_out")" \
  "$mount_rc" "$(json_text "$mount_out")" "$(json_text "$listing")"
