#!/bin/sh
# Create Keycard's namespace and search attributes on the Temporal server; safe to re-run.
# Runs in the temporalio/admin-tools image (the `temporal` CLI), as docker-compose.yml's
# temporal-setup step. The search attributes are the ones keycard/temporal.py declares, each as
# Name:Type (KeycardState:Keyword KeycardApprovers:KeywordList ...).
set -eu

: "${TEMPORAL_ADDRESS:?TEMPORAL_ADDRESS is not set}"
NAMESPACE="${KEYCARD_NAMESPACE:?KEYCARD_NAMESPACE is not set}"
RETENTION="${KEYCARD_NAMESPACE_RETENTION:-720h}"
ATTRIBUTES="${KEYCARD_SEARCH_ATTRIBUTES:?KEYCARD_SEARCH_ATTRIBUTES is not set}"

attempt=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 30 ]; then
    echo "keycard: Temporal at $TEMPORAL_ADDRESS is not healthy; giving up" >&2
    exit 1
  fi
  sleep 2
done

if temporal operator namespace describe --address "$TEMPORAL_ADDRESS" --namespace "$NAMESPACE" >/dev/null 2>&1; then
  echo "keycard: namespace $NAMESPACE exists"
else
  echo "keycard: creating namespace $NAMESPACE (retention $RETENTION)"
  temporal operator namespace create --address "$TEMPORAL_ADDRESS" --namespace "$NAMESPACE" \
    --retention "$RETENTION"
fi

# Only missing attributes are created, so re-running changes nothing. A namespace created a moment
# ago may not have reached every Temporal service yet: creation retries for a while.
existing=$(temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" \
  --namespace "$NAMESPACE" 2>/dev/null) || existing=""
for attribute in $ATTRIBUTES; do
  name="${attribute%%:*}"
  type="${attribute#*:}"
  if printf '%s\n' "$existing" | grep -qw "$name"; then
    echo "keycard: search attribute $name exists"
    continue
  fi
  echo "keycard: creating search attribute $name ($type)"
  attempt=0
  until temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" \
      --namespace "$NAMESPACE" --name "$name" --type "$type"; do
    attempt=$((attempt + 1))
    if [ "$attempt" -ge 15 ]; then
      echo "keycard: could not create search attribute $name" >&2
      exit 1
    fi
    sleep 2
  done
done
echo "keycard: namespace $NAMESPACE is ready for Keycard"
