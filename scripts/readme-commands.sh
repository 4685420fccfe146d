#!/usr/bin/env bash
# Prints the commands of the README's first ```sh block, one a line, without
# their trailing comments: the first installs and starts the appliance, the
# second runs the tests. .ci/run runs exactly these, so CI proves the README.
set -euo pipefail
cd "$(dirname "$0")/.."
awk '/^```sh$/ { inside = 1; next } /^```/ { if (inside) exit } inside' README.md | sed -E 's/[[:space:]]+#.*$//; s/[[:space:]]+$//' | grep -v '^$'
