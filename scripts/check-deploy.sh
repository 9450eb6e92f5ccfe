#!/usr/bin/env bash
# Checks the deployment files under deploy/ (scripts/test.sh runs it after clippy):
#   - Prometheus rules: promtool check rules, promtool test rules (each alert fires and does
#     not fire on synthetic series);
#   - Grafana dashboard: valid JSON, uid, title, data source and instance variables, every
#     query valid PromQL (promtool, through a throw-away rules file), aggregations by instance
#     keep the shard label (a cluster archiver's) and legends show it;
#   - every pitr_* metric named in dashboard, rules and manifests is one pitr exports;
#   - YAML of deploy/kubernetes/* and deploy/prometheus/* parses (python3 yaml), the
#     kustomization's resources exist, and `kubectl kustomize` builds when kubectl is there;
#   - systemd units: systemd-analyze verify (when available) on a scratch root, and the
#     credentials wrapper exporting credentials as variables.
# Needs promtool (Debian package prometheus: scripts/install-deps.sh promtool) and python3.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

D=deploy
RULES="$D/prometheus/pitr-alerts.yml"
RULES_TEST="$D/prometheus/pitr-alerts.test.yml"
DASHBOARD="$D/grafana/pitr-dashboard.json"
WRAPPER="$D/systemd/pitr-with-credentials"

have promtool || die "promtool not found: install it with 'scripts/install-deps.sh promtool' (apt-get install prometheus)"
have python3 || die "python3 not found: install it with 'apt-get install python3'"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

banner "prometheus rules"
promtool check rules "$RULES"
promtool test rules "$RULES_TEST"

banner "grafana dashboard"
python3 -m json.tool "$DASHBOARD" >/dev/null || die "$DASHBOARD is not valid JSON"
# The dashboard's queries as recording rules, so that promtool parses each one.
python3 - "$DASHBOARD" "$scratch/dashboard-rules.yml" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
problems = []
if not d.get("uid") or not d.get("title"):
    problems.append("uid and title are required")
names = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
if names.get("datasource", {}).get("type") != "datasource":
    problems.append("no 'datasource' variable of type datasource")
if "instance" not in names:
    problems.append("no 'instance' variable")
exprs = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        for t in p.get("targets", []):
            if p.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"panel {p.get('title')!r} does not use the datasource variable")
            e = t.get("expr", "")
            if '$instance' not in e:
                problems.append(f"panel {p.get('title')!r}: query without the instance filter: {e}")
            exprs.append((p.get("title"), e))
            # A cluster:// archiver has a series per shard (label shard): aggregations keep
            # it, and legends name it.
            for by in re.findall(r"by \(([^)]*)\)", e):
                if "instance" in by and "shard" not in by:
                    problems.append(f"panel {p.get('title')!r}: aggregation without shard: {e}")
            legend = t.get("legendFormat", "")
            if "{{instance}}" in legend and "{{shard}}" not in legend and "pitr_build_info" not in e:
                problems.append(f"panel {p.get('title')!r}: legend without {{{{shard}}}}: {legend}")
walk(d.get("panels", []))
if not exprs:
    problems.append("no queries")
if problems:
    sys.exit("dashboard: " + "; ".join(problems))
with open(sys.argv[2], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (title, e) in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$instance", ".*")
        f.write(f"      - record: dashboard_query_{i}\n        expr: {json.dumps(e)}\n")
print(f"{len(exprs)} queries")
PY
promtool check rules "$scratch/dashboard-rules.yml"

banner "metric names"
# The metrics pitr exports (pitr archive, pitr ship --follow); histograms add _bucket,
# _sum, _count.
python3 - "$DASHBOARD" "$RULES" "$RULES_TEST" "$D"/kubernetes/*.yaml <<'PY'
import re, sys
known = set("""pitr_link_up pitr_link_reconnects_total pitr_received_offset pitr_durable_offset
pitr_recovery_point_bytes pitr_recovery_point_seconds pitr_uploaded_objects_total
pitr_uploaded_bytes_total pitr_upload_duration_seconds pitr_store_errors_total
pitr_buffered_bytes pitr_newest_snapshot_age_seconds pitr_compaction_backlog_objects
pitr_window_start_timestamp_seconds pitr_window_end_timestamp_seconds pitr_retention_seconds
pitr_lease_held pitr_build_info pitr_ship_lag_seconds pitr_ship_lag_objects pitr_ship_lag_bytes
pitr_ship_copied_objects_total pitr_ship_errors_total""".split())
histograms = {"pitr_upload_duration_seconds"}
bad = []
for path in sys.argv[1:]:
    text = open(path).read()
    # Recording rules (pitr:...) are ours; a name must not continue with ':'.
    for m in re.finditer(r"(?<![\w:])pitr_[a-z0-9_]+(?![\w:])", text):
        n = m.group(0)
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        if n in known or (base in histograms and base != n):
            continue
        bad.append(f"{path}: {n}")
if bad:
    sys.exit("unknown metric names:\n  " + "\n  ".join(sorted(set(bad))))
print("all metric names known")
PY

banner "yaml"
if python3 -c 'import yaml' 2>/dev/null; then
  python3 - "$D"/kubernetes/*.yaml "$D"/prometheus/*.yml <<'PY'
import os, sys, yaml
for path in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    if not docs:
        sys.exit(f"{path}: no YAML document")
    kinds = [d.get("kind", "-") for d in docs]
    if os.path.basename(path) == "kustomization.yaml":
        for r in docs[0].get("resources", []):
            if not os.path.exists(os.path.join(os.path.dirname(path), r)):
                sys.exit(f"{path}: resource {r} does not exist")
    print(f"{path}: {len(docs)} document(s) {' '.join(kinds)}")
PY
else
  die "python3 has no yaml module: install it with 'apt-get install python3-yaml' (scripts/install-deps.sh promtool does)"
fi
if have kubectl; then
  kubectl kustomize "$D/kubernetes" >"$scratch/kustomized.yaml"
  log "kubectl kustomize: $(grep -c '^kind:' "$scratch/kustomized.yaml") objects"
else
  log "kubectl not found: kustomization not built"
fi

banner "systemd units"
sh -n "$WRAPPER"
# The wrapper exports credentials env_NAME as NAME (trailing newline dropped), passes the
# arguments through, and refuses a name that is not a variable name.
creds="$scratch/credentials"
mkdir -p "$creds"
printf 'pa ss"word $x\n' >"$creds/env_PITR_SOURCE_PASSWORD"
printf 'k3y' >"$creds/env_AWS_SECRET_ACCESS_KEY"
printf 'ignored' >"$creds/other"
out="$(CREDENTIALS_DIRECTORY="$creds" sh "$WRAPPER" sh -c \
  'printf "%s|%s|%s|%s" "$PITR_SOURCE_PASSWORD" "$AWS_SECRET_ACCESS_KEY" "${other-unset}" "$1"' _ arg)"
[ "$out" = 'pa ss"word $x|k3y|unset|arg' ] || die "pitr-with-credentials exported the wrong values: $out"
printf 'x' >"$creds/env_BAD-NAME"
if CREDENTIALS_DIRECTORY="$creds" sh "$WRAPPER" true 2>/dev/null; then
  die "pitr-with-credentials accepted the credential env_BAD-NAME"
fi
log "pitr-with-credentials: exports credentials as variables, refuses bad names"
if have systemd-analyze; then
  # A scratch root with the system's units, the wrapper and a stand-in pitr where the units
  # expect them; any message (an unknown key, a missing file) fails.
  root="$scratch/root"
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/usr/local/libexec" "$root/usr/local/bin"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
  install -m 0755 "$WRAPPER" "$root/usr/local/libexec/pitr-with-credentials"
  printf '#!/bin/sh\n' >"$root/usr/local/bin/pitr"
  chmod 0755 "$root/usr/local/bin/pitr"
  cp "$D"/systemd/*.service "$D"/systemd/*.timer "$root/etc/systemd/system/"
  units=(pitr-archive.service pitr-archive@example.service pitr-drill.service pitr-drill.timer)
  if ! systemd-analyze verify --root="$root" --man=no "${units[@]}" >"$scratch/verify.log" 2>&1 \
    || [ -s "$scratch/verify.log" ]; then
    cat "$scratch/verify.log" >&2
    die "systemd-analyze verify found problems in deploy/systemd"
  fi
  log "systemd-analyze verify: ${units[*]} clean"
else
  log "SKIPPED systemd-analyze verify: systemd-analyze not found (apt-get install systemd)"
fi

banner "deploy files OK"
