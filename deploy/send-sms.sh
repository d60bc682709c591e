#!/usr/bin/env bash
# Posts a signed SMS to the dev gateway as carrier "dev":
#   deploy/send-sms.sh <message-id> <from> <text>
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/dev-env.sh
id="${1:?message id}"; from="${2:?sender number}"; text="${3:?text}"
body=$(printf '{"message_id":"%s","from":"%s","to":"12345","text":"%s"}' "$id" "$from" "$text")
ts=$(date +%s)
sig=$(printf '%s.%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$GATEWAY_SMS_SECRET_DEV" -hex | sed 's/^.* //')
curl -sS -X POST "http://127.0.0.1:8080/sms/dev/inbound" \
  -H 'content-type: application/json' \
  -H "x-hotline-timestamp: $ts" \
  -H "x-hotline-signature: v1=$sig" \
  --data-binary "$body"
echo
