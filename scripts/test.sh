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
