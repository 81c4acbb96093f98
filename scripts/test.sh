#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run): installs missing
# dependencies, builds everything, then runs every test with CTest. Tests
# that need PostgreSQL start their own private server.
#
# Extra arguments go to ctest, e.g.: scripts/test.sh -R Inventory
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/build.sh
ctest --test-dir build --output-on-failure -j2 "$@"

# The docker-compose cluster test (tests/cluster/): installs and starts Docker
# as needed, builds the images, runs the three-device cluster's scenarios and
# cleans up; about 10-12 minutes from nothing. Needs root. Skipped when
# arguments select tests, or with SKIP_CLUSTER_TEST=1.
if [[ $# -eq 0 && "${SKIP_CLUSTER_TEST:-0}" != 1 ]]; then
  scripts/cluster-test.sh
fi
