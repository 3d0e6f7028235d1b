# Shared helpers, placed into every rendered stage script after its parameters.
# shellcheck shell=bash

log() { printf '[%s %s] %s\n' "$STAGE" "$NODE_NAME" "$*"; }

# Output that may quote a bootstrap token or CA hash is passed through this before it is shown.
redact() { sed -E 's/[a-z0-9]{6}\.[a-z0-9]{16}/<token>/g; s/sha256:[0-9a-f]{64}/sha256:<hash>/g'; }
