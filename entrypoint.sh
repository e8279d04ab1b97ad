#!/usr/bin/env bash
# Container entry point: prefetch the enabled models' snapshots (online for this step only), then serve.
# Exactly the commands a person runs outside a container: `talkies download` and `talkies serve`.
set -euo pipefail
TALKIES=/app/.venv/bin/talkies
if [ "${TALKIES_PREFETCH:-1}" != "0" ]; then
    # A model that cannot be fetched is not fatal: it is listed and answers 503 naming what is missing.
    HF_HUB_OFFLINE=0 "$TALKIES" download || echo "entrypoint: some snapshots could not be fetched; see above" >&2
fi
exec "$TALKIES" serve "$@"
