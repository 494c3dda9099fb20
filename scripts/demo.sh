#!/usr/bin/env bash
# `make demo`: a local CKAN with ckanext-webhooks, its delivery worker and a demo
# receiver that verifies signatures. Everything it writes lives in .demo/.
# Expects the venv and services; `make demo` sees to both.
#
# Search is a real Apache Solr 9 (scripts/solr.sh: fetched with Maven the
# first time, a `ckan` core on CKAN's schema, its index in .demo/solr).
# DEMO_SOLR picks another: a URL (http://127.0.0.1:8983/solr/ckan) uses a
# Solr already running; `none` runs without one, with the stand-in plugin
# webhooks_demo_nosolr (search pages then stay empty).
#
# Ctrl-C or a TERM stops Solr, CKAN, the worker and the receiver (each runs
# in a session of its own, and the traps below stop those sessions).
# DEMO_EXIT_AFTER_START=1 stops everything once it is up. DEMO_PORT,
# DEMO_RECEIVER_PORT, DEMO_SOLR_PORT, DEMO_DIR, DEMO_DATABASE_URL and
# DEMO_REDIS_URL move it (the tests run it on their own ports, directory,
# database and Redis db).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
case ${VENV:=.venv} in
    /*) BIN=$VENV/bin ;;
    *) BIN=$ROOT/$VENV/bin ;;
esac
DEMO=${DEMO_DIR:-$ROOT/.demo}
INI=$DEMO/demo.ini
SHOWN=${DEMO#"$ROOT"/}  # as the messages below name it
CKAN_PORT=${DEMO_PORT:-5000}
CKAN_URL=http://127.0.0.1:$CKAN_PORT
RECEIVER_PORT=${DEMO_RECEIVER_PORT:-8765}
DATABASE_URL=${DEMO_DATABASE_URL:-postgresql://ckan_default:pass@127.0.0.1/ckan_demo}
REDIS_URL=${DEMO_REDIS_URL:-redis://127.0.0.1:6379/2}
SOLR=${DEMO_SOLR:-local}
SOLR_PORT=${DEMO_SOLR_PORT:-8983}
ADMIN_PASSWORD=demo-admin-pass

say() { printf '\n==> %s\n' "$*"; }

case $SOLR in
    local)
        SOLR_URL=http://127.0.0.1:$SOLR_PORT/solr/ckan
        SEARCH="Apache Solr 9 (log: $SHOWN/solr.log)"
        PLUGINS=webhooks
        ;;
    none)
        SOLR_URL=http://127.0.0.1:8983/solr/no-solr-in-this-demo
        SEARCH="NONE: the STAND-IN plugin webhooks_demo_nosolr (DEMO_SOLR=none)"
        PLUGINS="webhooks webhooks_demo_nosolr"
        cat >&2 <<'EOF'

******************************************************************************
 DEMO_SOLR=none: NO SOLR. The stand-in plugin webhooks_demo_nosolr turns
 CKAN's search index off: the search, organization and group pages list NO
 datasets. Everything else is real CKAN. Never enable it on a real portal.
******************************************************************************
EOF
        ;;
    http://* | https://*)
        SOLR_URL=$SOLR
        SEARCH="the Solr named by DEMO_SOLR"
        PLUGINS=webhooks
        ;;
    *)
        echo "demo: DEMO_SOLR is a Solr core's URL or 'none', not '$SOLR'" >&2
        exit 2
        ;;
esac

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=("$CKAN_PORT" "$RECEIVER_PORT")
if [ "$SOLR" = local ]; then ports+=("$SOLR_PORT"); fi
for port in "${ports[@]}"; do
    if port_in_use "$port"; then
        echo "demo: 127.0.0.1:$port is already in use (another demo still running?)" >&2
        exit 1
    fi
done

mkdir -p "$DEMO/storage"

# --- config: secrets made once per install, the rest from the template -------
if [ ! -s "$DEMO/secrets" ]; then
    {
        echo "SECRET_KEY=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(32))')"
        echo "WTF_CSRF_SECRET_KEY=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(32))')"
    } > "$DEMO/secrets"
    chmod 600 "$DEMO/secrets"
fi
# shellcheck disable=SC1091
. "$DEMO/secrets"
sed -e "s|@SECRET_KEY@|$SECRET_KEY|" \
    -e "s|@WTF_CSRF_SECRET_KEY@|$WTF_CSRF_SECRET_KEY|" \
    -e "s|@STORAGE_PATH@|$DEMO/storage|" \
    -e "s|@SITE_URL@|$CKAN_URL|" \
    -e "s|@DATABASE_URL@|$DATABASE_URL|" \
    -e "s|@REDIS_URL@|$REDIS_URL|" \
    -e "s|@SOLR_URL@|$SOLR_URL|" \
    -e "s|@PLUGINS@|$PLUGINS|" \
    scripts/demo.ini.in > "$INI"
echo "wrote $INI"

ckan() { "$BIN/ckan" -c "$INI" "$@"; }

# --- the processes: Solr, the receiver, the worker, CKAN --------------------
PIDS=()
TAIL_PID=
start() {  # start NAME LOGFILE COMMAND...: own session, so we can stop its children too
    local name=$1 logfile=$2; shift 2
    setsid "$@" >"$logfile" 2>&1 </dev/null &
    PIDS+=("$!")
    echo "started $name (pid $!), log: ${logfile#"$ROOT"/}"
}
stop_all() {
    # a second signal must not cut the stopping short: make passes its TERM
    # or INT on to this script after the one the whole job got, and one
    # landing here would leave the processes not yet stopped running
    trap - EXIT
    trap '' INT TERM
    set +e  # stop everything we can, whatever fails
    [ ${#PIDS[@]} -eq 0 ] && return
    say "stopping the demo"
    local pid i
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        local alive=
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break
        sleep 0.2
    done
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    if [ -n "$TAIL_PID" ]; then kill "$TAIL_PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    echo "stopped"
}
trap stop_all EXIT
# stopping the demo is its normal end: exit 0, so `make demo` reports no
# error (make printed "Error 143" for a TERM)
trap 'exit 0' INT TERM

# Solr first: it comes up while the database is set up
SOLR_PID=
if [ "$SOLR" = local ]; then
    say "starting Solr (the first run fetches it with Maven)"
    VENV=$VENV bash scripts/solr.sh install
    rm -f "$DEMO/solr/solr.port"
    start solr "$DEMO/solr.log" env VENV="$VENV" \
        bash scripts/solr.sh foreground "$DEMO/solr" "$SOLR_PORT"
    SOLR_PID=$!
fi


# --- database and the sysadmin ------------------------------------------------
say "database (${DATABASE_URL##*/})"
ckan db init 2>>"$DEMO/setup.log"
ckan db upgrade -p webhooks 2>>"$DEMO/setup.log"

say "sysadmin 'admin'"
admin=$(ckan user show admin 2>>"$DEMO/setup.log")
if grep -q '^User: None' <<<"$admin"; then
    ckan user add admin email=admin@example.org \
        password="$ADMIN_PASSWORD" 2>>"$DEMO/setup.log"
fi
ckan sysadmin add admin 2>>"$DEMO/setup.log"
API_TOKEN=$(ckan user token add admin demo 2>>"$DEMO/setup.log" | tail -n 1 | tr -d '[:space:]')
echo "$API_TOKEN" > "$DEMO/admin-api-token"
chmod 600 "$DEMO/admin-api-token"

if [ -n "$SOLR_PID" ]; then
    printf 'waiting for Solr '
    for ((i = 0; ; i++)); do
        if [ -s "$DEMO/solr/solr.port" ]; then
            echo " up: $SOLR_URL"
            break
        fi
        if ! kill -0 "$SOLR_PID" 2>/dev/null || [ "$i" -ge 600 ]; then
            echo " Solr did not come up; last lines of $SHOWN/solr.log:" >&2
            tail -n 30 "$DEMO/solr.log" >&2
            exit 1
        fi
        printf '.'
        sleep 0.2
    done
fi
if [ "$SOLR" != none ]; then
    # datasets written while there was no index (DEMO_SOLR=none, a schema of
    # another CKAN) become searchable; those already indexed are skipped
    say "search index"
    ckan search-index rebuild --only-missing 2>>"$DEMO/setup.log"
fi

say "starting the receiver, the worker and CKAN"
start receiver "$DEMO/receiver.log" "$BIN/python" -u -m ckanext.webhooks.demo.receiver \
    --port "$RECEIVER_PORT" --ckan-url "$CKAN_URL"
RECEIVER_PID=$!
start worker "$DEMO/worker.log" "$BIN/ckan" -c "$INI" webhooks worker
start ckan "$DEMO/ckan.log" "$BIN/ckan" -c "$INI" run --host 127.0.0.1 --port "$CKAN_PORT" \
    --disable-reloader --threaded

printf 'waiting for %s/api/3/action/status_show ' "$CKAN_URL"
for ((i = 0; ; i++)); do
    if "$BIN/python" - "$CKAN_URL/api/3/action/status_show" <<'EOF' 2>/dev/null
import sys, urllib.request
sys.exit(urllib.request.urlopen(sys.argv[1], timeout=2).status != 200)
EOF
    then
        echo " up"
        break
    fi
    for pid in "${PIDS[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo " a demo process died; last lines of the logs:" >&2
            tail -n 20 "$DEMO"/*.log >&2
            exit 1
        fi
    done
    if [ "$i" -ge 120 ]; then
        echo " CKAN did not answer within 60s; see $SHOWN/ckan.log" >&2
        exit 1
    fi
    printf '.'
    sleep 0.5
done

# --- an organization and a group to subscribe to ------------------------------
"$BIN/python" - "$CKAN_URL" "$DEMO/admin-api-token" <<'EOF'
import sys
from ckanapi import NotFound, RemoteCKAN

admin = RemoteCKAN(sys.argv[1], apikey=open(sys.argv[2]).read().strip())
for kind, name, title in (("organization", "demo-org", "Demo organization"),
                          ("group", "demo-group", "Demo group")):
    try:
        admin.call_action(kind + "_show", {"id": name})
    except NotFound:
        admin.call_action(kind + "_create", {"name": name, "title": title})
        print("created the", kind, name)
EOF

# --- what to try --------------------------------------------------------------
cat > "$DEMO/try.py" <<EOF
# Create a hook for new datasets pointing at the demo receiver, wait until the
# receiver has answered the verification challenge, then create a dataset
# in the demo organization and group.
import time
from ckanapi import RemoteCKAN

ckan = RemoteCKAN("$CKAN_URL")  # anonymous: anyone may create a hook
hook = ckan.action.webhook_create(topic="dataset/create",
                                  address="http://127.0.0.1:$RECEIVER_PORT/")
for _ in range(60):  # pending until the receiver echoes the challenge
    if ckan.action.webhook_show(id=hook)["status"] == "active":
        break
    time.sleep(0.5)
else:
    raise SystemExit("hook still pending: see $SHOWN/worker.log")
print("hook", hook, "is active; its page:")
print("  $CKAN_URL/webhooks/" + hook)

admin = RemoteCKAN("$CKAN_URL", apikey=open("$DEMO/admin-api-token").read().strip())
dataset = admin.action.package_create(name="demo-%d" % time.time(),
                                      title="Webhooks demo dataset",
                                      owner_org="demo-org",
                                      groups=[{"name": "demo-group"}])
print("created dataset", dataset["name"], "- watch the receiver's output")
print("it is listed on the search, organization and group pages:")
for page in ("dataset", "organization/demo-org", "group/demo-group"):
    print("  $CKAN_URL/" + page)
EOF

cat <<EOF

------------------------------------------------------------------------------
 ckanext-webhooks demo is running

   CKAN          $CKAN_URL          (log: $SHOWN/ckan.log)
   pages         $CKAN_URL/webhooks
   admin page    $CKAN_URL/ckan-admin/webhooks   (log in as the sysadmin)
   worker        ckan webhooks worker           (log: $SHOWN/worker.log)
   receiver      http://127.0.0.1:$RECEIVER_PORT/          (log: $SHOWN/receiver.log)
   search        $SOLR_URL
                 $SEARCH
   sysadmin      admin / $ADMIN_PASSWORD
   API token     $API_TOKEN
                 (also in $SHOWN/admin-api-token)

 Try it from another terminal (saved as $SHOWN/try.py):

   ${BIN#"$ROOT"/}/python $SHOWN/try.py

$(sed 's/^/   /' "$DEMO/try.py")

 The receiver prints one line per delivery below: VERIFIED means the
 signature checked out with the standardwebhooks library.
 Ctrl-C stops CKAN, the worker, the receiver and Solr.
------------------------------------------------------------------------------

EOF

if [ "${DEMO_EXIT_AFTER_START:-}" = 1 ]; then
    exit 0
fi

say "receiver output (deliveries)"
tail -n +1 -f --pid="$RECEIVER_PID" "$DEMO/receiver.log" &
TAIL_PID=$!
wait "$TAIL_PID"
