# Sourced by the scripts that copy an official project's code under .device/: refuses a
# destination inside this repository that git does not ignore (the official code must never be
# committed). Usage: refuse_tracked_dest DEST (creates DEST).
refuse_tracked_dest() {
  local dest=$1 top abs
  mkdir -p "$dest"
  git rev-parse --show-toplevel >/dev/null 2>&1 || return 0
  top=$(git rev-parse --show-toplevel)
  abs=$(cd "$dest" && pwd)
  case $abs/ in
    "$top"/*) git check-ignore -q "$dest" || { echo "error: $dest is inside the repository but not git-ignored" >&2; exit 1; } ;;
  esac
}
