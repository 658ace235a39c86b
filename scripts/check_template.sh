#!/usr/bin/env bash
# Static checks of template.yaml, all offline: SAM validation with its cfn-lint pass, cfn-lint on its
# own (warnings fail too), and checkov's CloudFormation checks (skips carry their reason in the
# resource's Metadata). Fails on the first problem.
#
# TOOLS: directory holding the tool virtual environments sam/ and checkov/ (default .venv-tools,
# created by `make template-check`); a relative path is taken from the repository root.
set -euo pipefail

cd "$(dirname "$0")/.."
TOOLS="${TOOLS:-.venv-tools}"
TEMPLATE=template.yaml

# No telemetry: these checks must not depend on the network (all three run offline).
export SAM_CLI_TELEMETRY=0

for tool in "$TOOLS/sam/bin/sam" "$TOOLS/sam/bin/cfn-lint" "$TOOLS/checkov/bin/checkov"; do
	[[ -x "$tool" ]] || { echo "check_template: $tool not found (run \`make template-check\`)" >&2; exit 2; }
done

echo "==> sam validate --lint"
"$TOOLS/sam/bin/sam" validate --lint --template-file "$TEMPLATE"

echo "==> cfn-lint $TEMPLATE"
"$TOOLS/sam/bin/cfn-lint" -- "$TEMPLATE"

echo "==> checkov (cloudformation, offline)"
"$TOOLS/checkov/bin/checkov" -f "$TEMPLATE" --framework cloudformation --skip-download --compact --quiet

echo "template checks passed"
