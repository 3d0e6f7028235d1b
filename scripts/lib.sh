# Shared helpers, placed into every rendered stage script after its parameters.
# shellcheck shell=bash

log() { printf '[%s %s] %s\n' "$STAGE" "$NODE_NAME" "$*"; }

# Output that may quote a bootstrap token or CA hash is passed through this before it is shown.
redact() { sed -E 's/[a-z0-9]{6}\.[a-z0-9]{16}/<token>/g; s/sha256:[0-9a-f]{64}/sha256:<hash>/g'; }

# Write stdin (a secret: it may hold a token) to FILE, readable by root only.
write_secret_file() {
  install -d -m 0755 "$(dirname "$1")"
  (umask 077 && cat >"$1")
}

# Run a command with its output in LOG (root only); on failure show LOG's tail, redacted.
run_logged() {
  local log=$1
  shift
  install -d -m 0700 "$(dirname "$log")"
  if ! "$@" >"$log" 2>&1; then
    echo "'$1 $2' failed on $NODE_NAME; last lines of $log:" >&2
    tail -n 40 "$log" | redact >&2
    return 1
  fi
}
