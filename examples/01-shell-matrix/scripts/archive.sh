#!/usr/bin/env bash
# Writes a few fake rows for one (database, table) instance of the matrix.
set -euo pipefail
out="out/${PGQ_INSTANCE_DB}.${PGQ_INSTANCE_TABLE}.csv"
sleep 0.2   # pretend to work, so parallel runners are visible in the report
for id in 1 2 3; do
  echo "${id},${PGQ_INSTANCE_DB},${PGQ_INSTANCE_TABLE}" >> "${out}"
done
echo "archived ${PGQ_INSTANCE_DB}.${PGQ_INSTANCE_TABLE}"
