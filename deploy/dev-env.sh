# Development secrets, sourced by deploy/dev.sh and the tour in the README.
# Never use these values anywhere but on a developer's machine.
export GATEWAY_CITIZEN_KEY_SECRET="${GATEWAY_CITIZEN_KEY_SECRET:-dev-citizen-key-secret-not-for-production}"
export GATEWAY_SMS_SECRET_DEV="${GATEWAY_SMS_SECRET_DEV:-dev-carrier-secret-not-for-production}"
export GATEWAY_ADMIN_TOKEN="${GATEWAY_ADMIN_TOKEN:-dev-admin-token-not-for-production}"
export GATEWAY_LINKAGE_SECRET="${GATEWAY_LINKAGE_SECRET:-dev-linkage-secret-not-for-production}"
export GATEWAY_AGENT_FEED_SECRET="${GATEWAY_AGENT_FEED_SECRET:-dev-agent-feed-secret-not-for-production}"
export TICKETS_TOKEN_SECRET="${TICKETS_TOKEN_SECRET:-dev-tickets-token-secret-not-for-production}"
