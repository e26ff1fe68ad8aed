#!/usr/bin/env bash
# Copyright 2026 The mqtt-operator Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

# Usage: hack/verify-unchanged.sh COMMAND [ARG...]
#
# Runs COMMAND at the repository root and fails if it modified, added or removed
# any file that git sees (tracked, or untracked and not ignored). Used by
# `make verify` for `go mod tidy`, `go fmt` and code generators: their output is
# committed, so rerunning them must be a no-op.
#
# Only the command's own changes count: the tree is fingerprinted before and
# after, so a developer's uncommitted work does not make verify fail (a plain
# `git diff --exit-code` would). In a clean clone (CI) the two are equivalent.
# The command's changes are left in place: commit them to fix the failure.
set -euo pipefail

if [ "$#" -eq 0 ]; then
	echo "usage: $0 COMMAND [ARG...]" >&2
	exit 2
fi

cd "$(git rev-parse --show-toplevel)"

# fingerprint prints "<sha256>  <path>" for every file git sees.
fingerprint() {
	git ls-files -z --cached --others --exclude-standard |
		sort -zu |
		while IFS= read -r -d '' f; do
			if [ -f "$f" ]; then printf '%s\0' "$f"; fi
		done |
		xargs -0 -r sha256sum
}

before=$(mktemp)
after=$(mktemp)
trap 'rm -f "$before" "$after"' EXIT

fingerprint >"$before"
"$@"
fingerprint >"$after"

if ! cmp -s "$before" "$after"; then
	echo >&2
	echo "ERROR: '$*' changed the tree; run it and commit the result. Changed files:" >&2
	diff "$before" "$after" | sed -n 's/^[<>] [0-9a-f]*  /  /p' | sort -u >&2
	exit 1
fi
