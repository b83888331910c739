#!/bin/sh
# Create Temporal's databases on PostgreSQL, or bring their schemas up to date; safe to re-run.
# Runs in the temporalio/admin-tools image (temporal-sql-tool), as docker-compose.yml's
# temporal-schema step. Credentials come from deploy/temporal.env.
set -eu

export SQL_PLUGIN=postgres12
export SQL_HOST="${POSTGRES_HOST:-postgresql}"
export SQL_PORT="${POSTGRES_PORT:-5432}"
export SQL_USER="${POSTGRES_USER:?POSTGRES_USER is not set (deploy/temporal.env)}"
export SQL_PASSWORD="${POSTGRES_PWD:?POSTGRES_PWD is not set (deploy/temporal.env)}"
SCHEMA_DIR=/etc/temporal/schema/postgresql/v12

for database in temporal temporal_visibility; do
  case "$database" in
    temporal) schema="$SCHEMA_DIR/temporal/versioned" ;;
    *) schema="$SCHEMA_DIR/visibility/versioned" ;;
  esac
  echo "keycard: preparing database $database"
  # `create` fails when the database exists, which is the normal case after the first start.
  temporal-sql-tool --db "$database" create 2>/dev/null || true
  # setup-schema -v 0.0 only creates the version table; update-schema applies what is missing.
  temporal-sql-tool --db "$database" setup-schema -v 0.0 2>/dev/null || true
  temporal-sql-tool --db "$database" update-schema -d "$schema"
done
echo "keycard: Temporal databases are ready"
