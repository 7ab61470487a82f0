# Shared by the hand A/B scripts (cold_read.sh, listable.sh); sourced, not run.
#
# hand_ab_setup NAME [BIN...] [-- MOUNT_ARGS...]: sets BINS and MOUNT_ARGS from the arguments left
# after the script's options (usage line 6 of the script on error), makes a temporary mount point
# MNT (log in $MNT.log) and arranges for it to be unmounted and removed on exit.
hand_ab_setup() {
  local name=$1
  shift
  BINS=()
  while (($#)) && [[ $1 != -- ]]; do BINS+=("$1"); shift; done
  (($#)) && shift
  MOUNT_ARGS=("$@")
  ((${#BINS[@]})) || { sed -n '6p' "$0" >&2; exit 2; }
  MNT=$(mktemp -d "/tmp/strata-$name.XXXXXX")
  PID=
  trap 'unmount; rmdir "$MNT"; rm -f "$MNT.log"' EXIT
}

# Unmounts MNT and waits for the mount process PID, if any.
unmount() {
  fusermount3 -u "$MNT" 2>/dev/null || true
  [[ -n $PID ]] && wait "$PID" 2>/dev/null || true
  PID=
}

# Drops the page cache (root only).
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
