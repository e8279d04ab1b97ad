#!/usr/bin/env bash
# Container entry point: pull the enabled models' snapshots (online for this step only), then serve.
# Exactly the commands a person runs outside a container: `talkies pull` and `talkies serve`.
#
# Only TALKIES_ENABLED_MODELS are pulled (none when it is empty: the whole catalog is tens of GB). A pull
# interrupted here (a restart during first boot) resumes on the next start, and a partial snapshot never
# counts as present: `talkies pull --check` says what is missing.
set -euo pipefail
TALKIES=/app/.venv/bin/talkies
if [ "${TALKIES_PREFETCH:-1}" != "0" ] && [ -n "${TALKIES_ENABLED_MODELS:-}" ]; then
    IFS=',' read -r -a models <<< "$TALKIES_ENABLED_MODELS"
    # A model that cannot be fetched is not fatal: it is listed and answers 503 naming what is missing.
    HF_HUB_OFFLINE=0 "$TALKIES" pull "${models[@]}" || echo "entrypoint: some snapshots are incomplete; see above" >&2
fi
exec "$TALKIES" serve "$@"
