#!/usr/bin/env bash
# A real Apache Solr 9 on loopback, with a `ckan` core on the schema.xml of
# the CKAN in $VENV, for the demo, the tests and the benchmarks.
#
#   scripts/solr.sh install           Java and Maven (apt-get, when absent),
#                                     Solr's jars (Maven Central) and the
#                                     launcher, once; later calls are instant
#   scripts/solr.sh start HOME [PORT] start it in the background on HOME,
#                                     wait until the core answers, print its
#                                     URL (PORT 0, the default: a free one)
#   scripts/solr.sh stop HOME         stop the one started on HOME
#   scripts/solr.sh run COMMAND...    start one on a free port in a temporary
#                                     HOME, run COMMAND with CKAN_SOLR_URL set
#                                     to its core (CKAN reads solr_url from
#                                     it), stop it; exits with COMMAND's status
#   scripts/solr.sh foreground HOME PORT
#                                     run it in the foreground (the demo does)
#
# Environment:
#   VENV             CKAN's virtualenv (default .venv): whose schema.xml
#   SOLR_INDEX       disk (default) or memory: where the index lives; the
#                    tests and benchmarks use memory, where the commit CKAN
#                    makes after every dataset write costs no fsync
#   SOLR_HEAP        the JVM's maximum heap (default 512m)
#   SOLR_MAVEN_REPO  Maven's local repository (default ~/.m2/repository)
#   SOLR_CACHE       where the class path and the compiled launcher are kept
#                    (default ~/.cache/ckanext-webhooks/solr)
#   SOLR_WAIT_SECONDS how long `start` waits for the core (default 120)
#
# Nothing here is fetched but Solr's jars and Maven's plugins from Maven
# Central and Debian's packages; the launcher (scripts/solr/CkanSolr.java)
# and the core's solrconfig.xml are ours.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=$ROOT/scripts/solr
case ${VENV:=.venv} in
    /*) BIN=$VENV/bin ;;
    *) BIN=$ROOT/$VENV/bin ;;
esac
HOME=${HOME:-$(cd ~ && pwd)}  # CI may start us without it
CACHE=${SOLR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ckanext-webhooks/solr}
WAIT_SECONDS=${SOLR_WAIT_SECONDS:-120}

log() { echo "solr: $*" >&2; }
die() { log "$*"; exit 1; }

# --- install ----------------------------------------------------------------
apt_install() {
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" </dev/null
}

# Debian's JRE carries the jdk.compiler module: the launcher compiles with
# `java` alone when there is no javac
javac_() {
    if command -v javac >/dev/null; then
        javac "$@"
    else
        java -m jdk.compiler/com.sun.tools.javac.Main "$@"
    fi
}

# what the cache was built from: a change to the pom or the launcher rebuilds
build_key() {
    cat "$SRC/pom.xml" "$SRC/CkanSolr.java" | sha256sum | cut -c1-16
}

install() {
    local key built tmp
    key=$(build_key)
    built=$CACHE/$key
    if [ -s "$built/classpath" ] && [ -f "$built/classes/CkanSolr.class" ]; then
        echo "$built"
        return 0
    fi
    if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
        apt_install default-jre-headless maven
    fi
    local repo_option=()
    if [ -n "${SOLR_MAVEN_REPO:-}" ]; then
        repo_option=("-Dmaven.repo.local=$SOLR_MAVEN_REPO")
    fi
    mkdir -p "$CACHE"
    # built beside, moved into place whole: two runs at once both succeed
    tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
    log "fetching Solr $(sed -n 's:.*<solr.version>\(.*\)</solr.version>.*:\1:p' "$SRC/pom.xml") with Maven (once; about 100 MB)"
    local start=$SECONDS
    if ! mvn -B -q -f "$SRC/pom.xml" "${repo_option[@]}" \
            dependency:build-classpath -Dmdep.outputFile="$tmp/classpath" \
            >"$tmp/mvn.log" 2>&1 </dev/null; then
        cat "$tmp/mvn.log" >&2
        rm -rf "$tmp"
        die "Maven could not fetch Solr (log above)"
    fi
    javac_ -nowarn -d "$tmp/classes" -cp "$(cat "$tmp/classpath")" "$SRC/CkanSolr.java"
    rm -rf "$built"
    mv -T "$tmp" "$built" 2>/dev/null || rm -rf "$tmp"  # another run won
    log "Solr installed in $((SECONDS - start))s: $built"
    echo "$built"
}

# --- the Solr home ----------------------------------------------------------
ckan_schema() {
    local schema
    schema=$("$BIN/python" -c 'import ckan, os; print(os.path.join(
        os.path.dirname(ckan.__file__), "config", "solr", "schema.xml"))') \
        || die "no CKAN in $VENV (make venv)"
    [ -f "$schema" ] || die "no $schema"
    echo "$schema"
}

# HOME/solr.xml, HOME/ckan/{core.properties,conf/}; the schema is CKAN's. An
# index made with another CKAN's schema is removed (the demo rebuilds it).
lay_out() {
    local home=$1 schema conf
    schema=$(ckan_schema)
    conf=$home/ckan/conf
    mkdir -p "$conf"
    cp "$SRC/solr.xml" "$home/solr.xml"
    printf 'name=ckan\n' > "$home/ckan/core.properties"
    if [ -f "$conf/schema.xml" ] && ! cmp -s "$schema" "$conf/schema.xml"; then
        log "CKAN's schema changed: removing the old index in $home/ckan/data"
        rm -rf "$home/ckan/data"
    fi
    cp "$schema" "$conf/schema.xml"
    cp "$SRC/solrconfig.xml" "$conf/solrconfig.xml"
    # the files CKAN's schema names (protected words, synonyms): none
    : > "$conf/protwords.txt"
    : > "$conf/synonyms.txt"
}

java_options() {
    local options=(-Xms64m "-Xmx${SOLR_HEAP:-512m}" -XX:+UseSerialGC
        -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$SRC/log4j2.xml"
        -Dsolr.log.dir="$1"
        )
    case ${SOLR_INDEX:-disk} in
        disk) ;;
        memory) options+=(-Dsolr.directoryFactory=solr.ByteBuffersDirectoryFactory
                          -Dsolr.lock.type=single) ;;
        *) die "SOLR_INDEX is disk or memory, not ${SOLR_INDEX}" ;;
    esac
    printf '%s\n' "${options[@]}"
}

# --- running ------------------------------------------------------------------
foreground() {  # foreground HOME PORT: exec Solr; HOME/solr.port once it serves
    local home=$1 port=$2 built options
    built=$(install)
    lay_out "$home"
    rm -f "$home/solr.port"
    mapfile -t options < <(java_options "$home")
    cd "$home"
    exec java "${options[@]}" -cp "$built/classes:$(cat "$built/classpath")" \
        CkanSolr "$home" "$port" "$home/solr.port"
}

wait_for_port() {  # wait_for_port HOME PID: until HOME/solr.port (or PID dies)
    local home=$1 pid=$2 i
    for ((i = 0; i < WAIT_SECONDS * 5; i++)); do
        if [ -s "$home/solr.port" ]; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$home/solr.log" >&2 || true
            die "Solr stopped before it answered (log: $home/solr.log)"
        fi
        sleep 0.2
    done
    die "Solr did not answer within ${WAIT_SECONDS}s (log: $home/solr.log)"
}

core_url() { echo "http://127.0.0.1:$(cat "$1/solr.port")/solr/ckan"; }

start() {  # start HOME [PORT]
    local home=$1 port=${2:-0} pid began=$SECONDS
    mkdir -p "$home"
    home=$(cd "$home" && pwd)
    if [ -s "$home/solr.pid" ] && kill -0 "$(cat "$home/solr.pid")" 2>/dev/null; then
        die "a Solr already runs on $home (pid $(cat "$home/solr.pid"))"
    fi
    install >/dev/null
    rm -f "$home/solr.port"
    # a session of its own: `stop` and the callers' traps end it whole
    setsid bash "$0" foreground "$home" "$port" >"$home/solr.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" > "$home/solr.pid"
    wait_for_port "$home" "$pid"
    log "up in $((SECONDS - began))s: $(core_url "$home") (pid $pid, log $home/solr.log)"
    core_url "$home"
}

stop() {  # stop HOME: TERM (Solr closes its cores), KILL after 20s
    local home=$1 pid i
    [ -s "$home/solr.pid" ] || return 0
    pid=$(cat "$home/solr.pid")
    # what it cost: the JVM's peak resident memory (it is the session leader)
    if [ -r "/proc/$pid/status" ]; then
        log "stopping pid $pid; peak memory $(awk '/^VmHWM/ {print $2, $3}' "/proc/$pid/status")"
    fi
    if kill -TERM -- "-$pid" 2>/dev/null; then
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$home/solr.pid" "$home/solr.port"
}

run() {  # run COMMAND...: a Solr of its own for COMMAND
    local home status=0
    home=$(mktemp -d "${TMPDIR:-/tmp}/ckan-solr.XXXXXX")
    # shellcheck disable=SC2064
    trap "stop '$home'; rm -rf '$home'" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    CKAN_SOLR_URL=$(SOLR_INDEX=${SOLR_INDEX:-memory} start "$home")
    export CKAN_SOLR_URL
    "$@" || status=$?
    return "$status"
}

command=${1:-}
shift || true
case $command in
    install) install >/dev/null ;;
    start) [ $# -ge 1 ] || die "usage: $0 start HOME [PORT]"; start "$@" ;;
    stop) [ $# -eq 1 ] || die "usage: $0 stop HOME"; stop "$1" ;;
    run) [ $# -ge 1 ] || die "usage: $0 run COMMAND..."; run "$@" ;;
    foreground) [ $# -eq 2 ] || die "usage: $0 foreground HOME PORT"; foreground "$@" ;;
    *) die "usage: $0 install | start HOME [PORT] | stop HOME | run COMMAND... | foreground HOME PORT" ;;
esac
