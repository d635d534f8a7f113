#!/usr/bin/env bash
# Runs one named traffic scenario with real tools in a lab that is up (tests/lab/lab.sh up
# ID), in the foreground, for about SECONDS, then checks that the tool did what it should
# (nmap scanned, hping3 sent, the server answered, ...). Attacks run in the attacker node
# (10.66.2.2), benign traffic in the client node (10.66.1.2); the target is the server
# 10.66.9.2. No capture and no lab set-up here: tests/lab/make-dataset.sh records the
# scenarios, and tests that check the appliance blocks the attacker can run them as they are.
#
# usage (as root):
#   tests/lab/scenario.sh list                  names, label (attack|benign) and category
#   tests/lab/scenario.sh ID NAME [SECONDS]     run scenario NAME in lab ID
#
# environment:
#   MLD_SCENARIO_SEED=N          seeds every pseudo-random choice (think times, pages,
#                                passwords; hping3's base source port); default 1
#   MLD_SCENARIO_RATE=PPS        packets per second of the hping3 floods; default 1000
#   MLD_SCENARIO_ALLOW_BLOCKED=1 attack scenarios pass when the tool ran and sent its traffic
#                                even if the server stopped answering (the appliance blocked
#                                the attacker); by default they also require the server's
#                                answers. Benign scenarios always require them.
#
# Labels: attack (the attacker node's own address), benign (the client), spoofed (the attacker
# forges addresses of the lab's benign hosts: nobody real to block; the benign traffic
# that runs beside it must get every answer). Spoofed scenarios need the source check off
# on the attacker's link (tests/lab/eval.sh sets it), or the XDP program drops the forged
# packets before anything else sees them (docs/security.md).
#
# Exit status: 0 the scenario ran as intended; 1 it did not (the message says what); 2 bad usage.
# Every tool runs under `timeout`, with deterministic options.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
server4=10.66.9.2
server6=fd66:9::2

# name          label   category    node seconds  what
scenarios="\
nmap-syn             attack scan       a 10 nmap SYN scan of ports 1-1000 and the services above, paced over SECONDS
nmap-connect         attack scan       a 10 nmap connect() scan of ports 1-1000 and the services above, paced over SECONDS
nmap-udp             attack scan       a 10 nmap UDP scan of the top 100 ports, paced over SECONDS
nmap-version         attack scan       a 10 nmap -sV of the server's services (takes ~7 s, ends when done; SECONDS+20 at most)
hping-syn-flood      attack flood      a 5  hping3 SYN flood to :8080 (MLD_SCENARIO_RATE pps)
hping-syn-flood-rand attack flood      a 5  hping3 SYN flood to :8080 from random spoofed sources
hping-udp-flood      attack flood      a 5  hping3 UDP flood to :53, 100-byte payloads
hping-icmp-flood     attack flood      a 5  hping3 ICMP echo flood
hping-icmp-flood-large attack flood    a 5  hping3 ICMP echo flood of 1,400-byte payloads (1,428-byte packets)
http-flood           attack flood      a 6  ab: 500 short HTTP/1.0 connections per second (rounds of 100, 5 in parallel)
brute-force          attack bruteforce a 10 repeated login attempts against the fake login service :2222, 40/s
slow-http            attack slow       a 15 slowhttptest slowloris: 50 connections trickling header bytes every 4 s
benign-iperf         benign benign     c 8  iperf3 bulk transfer at 8 Mbit/s
benign-browse        benign benign     c 15 curl page views (page, css, js, image; sometimes a download) with think time, IPv4 and IPv6
benign-dns           benign benign     c 10 dig queries for lab.test names and others at human rate
benign-ping          benign benign     c 8  ping, IPv4 and IPv6, one per second
benign-http-burst    benign benign     c 10 one busy client: 20 short HTTP requests per second, keep-alive off
benign-idle          benign benign     c 15 3 long-lived echo sessions (:7007), a short line every ~4 s
nmap-syn-fast        attack scan       a 5  nmap SYN scan of ports 1-1000 at 1,000 probes/s (nmap's -T5 pace)
nmap-syn-slow        attack scan       a 15 nmap SYN scan at 3 probes/s (a slow scan)
nmap-xmas            attack scan       a 10 nmap Xmas scan (FIN, PSH, URG) of ports 1-1000, paced over SECONDS
hping-ack-flood      attack flood      a 5  hping3 ACK flood to :8080 (MLD_SCENARIO_RATE pps; the server answers each with a RST)
hping-udp-flood-large attack flood     a 5  hping3 UDP flood of 1,400-byte payloads in one flow (fixed ports) at 20,000 pps (~230 Mbit/s)
ssh-brute-force      attack bruteforce a 20 4 parallel ssh clients guessing passwords against OpenSSH's sshd :22, 3 per connection, ~1.7 connections/s
benign-dns-burst     benign benign     c 10 a burst of DNS queries: 50 a second, each from a new port (a mail server's or a crawler's resolver)
benign-crawl         benign benign     c 10 a crawler: 15 pages a second, keep-alive off (300 URLs in 20 s)
benign-iperf-http    benign benign     c 12 iperf3 at 100 Mbit/s with page fetches beside it (a long transfer with an HTTP mix)
spoof-syn-client     spoofed flood     a 8  SYNs to :8080 at MLD_SCENARIO_RATE pps forged with the client's address, while the client browses
spoof-udp-server     spoofed flood     a 8  UDP to the client at MLD_SCENARIO_RATE pps forged with the server's (the site's DNS and web) address, while the client uses both"

say() { echo "scenario: $*" >&2; }
usage() { echo "usage: scenario.sh list | scenario.sh ID NAME [SECONDS]" >&2; exit 2; }

if [[ "${1:-}" == list ]]; then
    printf '%-22s %-7s %s\n' NAME LABEL CATEGORY
    while read -r name label category _; do
        printf '%-22s %-7s %s\n' "$name" "$label" "$category"
    done <<<"$scenarios"
    exit 0
fi

(($# >= 2 && $# <= 3)) || usage
# Benign traffic beside an attack: the client fetches a page every 0.25 s until the file
# STOP exists; every fetch must succeed. Writes its counts to FILE.
client_fetches() { # client_fetches STOP FILE
    local ok=0 failed=0
    while [[ ! -e "$1" && -d "$work" ]]; do
        if run_in c 5 curl -sf -o /dev/null --max-time 3 "http://$server4:8080/page1.html"; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
        sleep 0.25
    done
    echo "$ok $failed" >"$2"
}
id=$1 name=$2
[[ "$id" =~ ^[a-z0-9]{1,8}$ ]] || { say "lab ID must be 1-8 lowercase letters or digits"; exit 2; }
row=$(awk -v n="$name" '$1 == n' <<<"$scenarios")
[[ -n "$row" ]] || { say "unknown scenario '$name' (see: scenario.sh list)"; exit 2; }
read -r _ label _ _ default_seconds _ <<<"$row"
seconds=${3:-$default_seconds}
[[ "$seconds" =~ ^[0-9]+$ ]] && ((seconds >= 1 && seconds <= 600)) \
    || { say "SECONDS must be a whole number from 1 to 600, not '$seconds'"; exit 2; }
# slowhttptest reports its connections every 5 s: a shorter run could not be checked (nor be slow).
[[ "$name" != slow-http ]] || ((seconds >= 5)) || { say "slow-http needs SECONDS >= 5"; exit 2; }
seed=${MLD_SCENARIO_SEED:-1}
[[ "$seed" =~ ^[0-9]+$ ]] || { say "MLD_SCENARIO_SEED must be a whole number"; exit 2; }
rate=${MLD_SCENARIO_RATE:-1000}
[[ "$rate" =~ ^[0-9]+$ ]] && ((rate >= 1 && rate <= 1000000)) \
    || { say "MLD_SCENARIO_RATE must be 1-1000000 packets per second"; exit 2; }
strict=1
[[ "$label" == attack && "${MLD_SCENARIO_ALLOW_BLOCKED:-0}" == 1 ]] && strict=0

for node_name in a c s; do
    [[ -e "/var/run/netns/mld${id}${node_name}" ]] \
        || { say "lab $id is not up (no namespace mld${id}${node_name}); run tests/lab/lab.sh up $id"; exit 1; }
done

work=$(mktemp -d /tmp/mld-scenario.XXXXXX)
# A failing scenario exits while its background helpers (page fetchers, query batches)
# may still run: stop them, so that nothing outlives the scenario.
cleanup() {
    local pids
    pids=$(jobs -p)
    [[ -z "$pids" ]] || kill $pids 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { say "$name: FAILED: $*"; exit 1; }
# Runs a command in a node, under `timeout` (SIGINT first, so that hping3 and nmap print
# their statistics; SIGKILL 5 s later). Its status is returned, never fatal here.
run_in() { # run_in NODE LIMIT_SECONDS CMD...
    local where=$1 limit=$2; shift 2
    local status=0
    nsenter --net="/var/run/netns/mld${id}${where}" timeout -s INT -k 5 "$limit" "$@" || status=$?
    return "$status"
}
# A counter of the node's IP stack: snmp NODE PROTO FIELD (e.g. s Tcp InSegs).
snmp() {
    nsenter --net="/var/run/netns/mld${id}$1" awk -v p="$2:" -v f="$3" '
        $1 == p && !seen { for (i = 2; i <= NF; i++) col[$i] = i; seen = 1; next }
        $1 == p && seen { print $col[f]; exit }' /proc/net/snmp
}
strip_ansi() { sed -e 's/\x1b\[[0-9;]*[a-zA-Z]//g' "$@"; }
# A pseudo-random whole number in [LOW, HIGH], from bash's generator seeded below.
pick() { echo $(($1 + RANDOM % ($2 - $1 + 1))); }
# Milliseconds as seconds for sleep(1).
ms() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
RANDOM=$seed

say "$name in lab $id for ${seconds}s (seed $seed$([[ $label == attack ]] && ((strict == 0)) && echo ', blocked server allowed'))"

# ---------------------------------------------------------------------------- scans
nmap_scan() { # nmap_scan EXPECT_OPEN NMAP_OPTIONS...
    local expect=$1; shift
    local status=0
    run_in a $((seconds + 30)) nmap -n -Pn --host-timeout $((seconds + 20))s "$@" "$server4" \
        >"$work/nmap.out" 2>&1 || status=$?
    ((status == 0)) || { cat "$work/nmap.out" >&2; fail "nmap exited with status $status"; }
    grep -q "Nmap done: 1 IP address (1 host up)" "$work/nmap.out" \
        || { cat "$work/nmap.out" >&2; fail "nmap did not scan $server4"; }
    if grep -q "Skipping host .* due to host timeout" "$work/nmap.out"; then
        ((strict == 0)) || fail "nmap hit its host timeout"
    fi
    local open
    open=$(grep -E '^[0-9]+/(tcp|udp) +open' "$work/nmap.out" | awk '{print $1}' | paste -sd, || true)
    say "$name: nmap: $(grep -E '^Not shown|scanned in' "$work/nmap.out" | paste -sd';' | tr -s ' '); open: ${open:-none}"
    if ((strict)) && ! grep -Eq "^$expect +open" "$work/nmap.out"; then
        cat "$work/nmap.out" >&2
        fail "nmap did not find $expect open on the server"
    fi
}
# Ports 1-1000 and the server's services above 1000.
scan_ports=1-1000,2222,5201,7007,8080
per_second() { echo $((($1 + seconds - 1) / seconds)); } # per_second TOTAL: a pace for SECONDS

# ---------------------------------------------------------------------------- floods
# hping_flood RECEIVED_CHECK HPING3_OPTIONS...; RECEIVED_CHECK: replies (hping3 saw answers),
# or a server counter "Proto Field" whose growth shows the packets arrived.
hping_flood() {
    local check=$1; shift
    local count=$((rate * seconds)) interval=$((1000000 / rate)) before=0 after status=0 proto field
    ((interval >= 1)) || interval=1
    read -r proto field <<<"$check"
    [[ "$check" == replies ]] || before=$(snmp s "$proto" "$field")
    # -q: only the statistics; -s: a seeded base source port (it increases per packet).
    run_in a $((seconds * 3 + 10)) hping3 -q -i "u$interval" -c "$count" -s $((1024 + seed * 7919 % 60000)) \
        "$@" "$server4" >"$work/hping.out" 2>&1 || status=$?
    # hping3 exits 1 when nothing answered (the spoofed flood's answers go elsewhere) and
    # timeout 124 when the time limit was hit: both still print the statistics.
    local stats sent received
    stats=$(grep -E '^[0-9]+ packets transmitted, [0-9]+ packets received' "$work/hping.out" || true)
    [[ -n "$stats" ]] || { cat "$work/hping.out" >&2; fail "hping3 printed no statistics (status $status)"; }
    ((status == 0 || status == 1 || status == 124)) || { cat "$work/hping.out" >&2; fail "hping3 exited with status $status"; }
    read -r sent _ _ received _ <<<"$stats"
    ((sent > 0)) || fail "hping3 sent nothing"
    if [[ "$check" == replies ]]; then
        say "$name: hping3: $sent sent, $received answered (of $count planned)"
        ((strict == 0 || received > 0)) || fail "the server answered none of hping3's $sent packets"
    else
        after=$(snmp s "$proto" "$field")
        say "$name: hping3: $sent sent (of $count planned); server $check grew by $((after - before))"
        ((strict == 0 || (after - before) * 2 >= sent)) \
            || fail "fewer than half of hping3's $sent packets reached the server ($check grew by $((after - before)))"
    fi
}

# ---------------------------------------------------------------------------- scenarios
case "$name" in
nmap-syn)
    r=$(per_second 1004)
    nmap_scan 8080/tcp -sS -p "$scan_ports" --max-retries 1 --min-rate "$r" --max-rate "$r"
    ;;
nmap-connect)
    r=$(per_second 1004)
    nmap_scan 8080/tcp -sT -p "$scan_ports" --max-retries 1 --min-rate "$r" --max-rate "$r"
    ;;
nmap-udp)
    # Only a maximum rate (each probe may be sent twice): Linux rate-limits port-unreachable
    # answers and nmap slows down for them.
    r=$(per_second 200)
    nmap_scan 53/udp -sU --top-ports 100 --max-retries 1 --max-rate "$r"
    ;;
nmap-version)
    # Not the echo service: every probe comes back, so nmap tries all of them (~40 s).
    nmap_scan 8080/tcp -sV -p 53,2222,5201,8080
    ;;
hping-syn-flood)
    hping_flood replies -S -p 8080
    ;;
hping-syn-flood-rand)
    hping_flood "Tcp InSegs" -S -p 8080 --rand-source
    ;;
hping-udp-flood)
    hping_flood "Udp InDatagrams" --udp -p 53 -d 100
    ;;
hping-icmp-flood)
    hping_flood replies --icmp -d 56
    ;;
hping-icmp-flood-large)
    hping_flood replies --icmp -d 1400
    ;;
http-flood)
    # Sustained: a round of 100 requests (ab, 5 in parallel, as fast as the server answers;
    # python's server does ~2000/s) every 200 ms: 500 short HTTP/1.0 connections per second
    # for SECONDS. -r: go on after receive errors; -s 5: socket timeout. Not more in
    # parallel: python's listen backlog is 5, the server drops SYNs beyond it, and ab ends
    # a round without retrying them, which would leave lone-SYN flows in every round.
    complete=0 failed=0 rounds=0 bad_rounds=0 started=0
    start_ns=$(date +%s%N)
    while (($(date +%s%N) - start_ns < seconds * 1000000000)); do
        status=0
        run_in a 10 ab -r -s 5 -c 5 -n 100 "http://$server4:8080/index.html" >"$work/ab.out" 2>&1 || status=$?
        rounds=$((rounds + 1))
        grep -q "^Benchmarking $server4" "$work/ab.out" && started=$((started + 1))
        complete=$((complete + $(awk '/^Complete requests:/ {print $3}' "$work/ab.out" || true) + 0))
        failed=$((failed + $(awk '/^Failed requests:/ {print $3}' "$work/ab.out" || true) + 0))
        if ((status != 0)); then
            bad_rounds=$((bad_rounds + 1))
            cp "$work/ab.out" "$work/ab-failed.out"
        fi
        pause_ns=$((start_ns + rounds * 200000000 - $(date +%s%N)))
        ((pause_ns <= 0)) || sleep "$(printf '%d.%09d' $((pause_ns / 1000000000)) $((pause_ns % 1000000000)))"
    done
    say "$name: ab: $rounds rounds, $complete requests complete, $failed failed, $bad_rounds rounds with errors"
    ((started > 0)) || { cat "$work/ab.out" >&2; fail "ab did not start"; }
    if ((strict)); then
        ((bad_rounds == 0)) || { cat "$work/ab-failed.out" >&2; fail "$bad_rounds ab rounds exited with an error"; }
        ((complete >= 100)) || fail "only $complete requests completed"
        ((failed * 20 <= complete)) || fail "$failed of $complete requests failed"
    fi
    ;;
brute-force)
    extra=()
    ((strict)) || extra=(--allow-errors)
    run_in a $((seconds + 15)) python3 "$here/traffic.py" brute "$server4" 2222 "$seconds" \
        --rate 40 --workers 4 --seed "$seed" "${extra[@]}" >"$work/brute.out" 2>&1 \
        || { cat "$work/brute.out" >&2; fail "the login attempts did not all get an answer"; }
    say "$name: $(tail -n 1 "$work/brute.out")"
    ;;
slow-http)
    # Slowloris: 50 connections opened at 25/s, each sending up to 20 more header bytes
    # every 4 s and never finishing its request; probe timeout 5 s.
    status=0
    run_in a $((seconds + 15)) slowhttptest -H -c 50 -r 25 -i 4 -x 20 -t GET -p 5 -l "$seconds" \
        -u "http://$server4:8080/index.html" >"$work/slow.raw" 2>&1 || status=$?
    strip_ansi "$work/slow.raw" >"$work/slow.out"
    connected=$(awk '/^connected:/ {n = $2} END {print n + 0}' "$work/slow.out") # at the last report
    ending=$(grep -A1 '^Exit status:' "$work/slow.out" | tr -s ' \n' ' ' || true)
    say "$name: slowhttptest: $connected connections held at the end; ${ending:-no exit status} (status $status)"
    ((status == 0)) || { tail -n 30 "$work/slow.out" >&2; fail "slowhttptest exited with status $status"; }
    grep -q 'slow HTTP test status' "$work/slow.out" || fail "slowhttptest reported no progress"
    if ((strict)); then
        ((connected >= 40)) || fail "only $connected of 50 connections were held open"
        [[ "$ending" == *"Hit test time limit"* ]] || fail "slowhttptest ended early: $ending"
    fi
    ;;
nmap-syn-fast)
    nmap_scan 8080/tcp -sS -p "$scan_ports" --max-retries 1 --min-rate 1000 --max-rate 1000
    ;;
nmap-syn-slow)
    # 3 probes a second: ports 1-1000 would take 5 minutes; the scan ends with SECONDS
    # (nmap's host timeout), so only the start is seen: the services are not reached.
    run_in a $((seconds + 10)) nmap -n -Pn -sS -p 1-1000 --max-retries 0 --max-rate 3 --host-timeout "${seconds}s" \
        "$server4" >"$work/nmap.out" 2>&1 || true
    grep -q "Skipping host .* due to host timeout\|Nmap done" "$work/nmap.out" \
        || { cat "$work/nmap.out" >&2; fail "nmap did not run"; }
    say "$name: nmap ran ${seconds}s at 3 probes/s"
    ;;
nmap-xmas)
    r=$(per_second 1004)
    # Closed ports answer with a RST, open ones stay silent: nmap reports them open|filtered.
    run_in a $((seconds + 30)) nmap -n -Pn -sX -p "$scan_ports" --max-retries 1 --min-rate "$r" --max-rate "$r" \
        --host-timeout $((seconds + 20))s "$server4" >"$work/nmap.out" 2>&1 || { cat "$work/nmap.out" >&2; fail "nmap failed"; }
    grep -q "Nmap done: 1 IP address (1 host up)" "$work/nmap.out" || { cat "$work/nmap.out" >&2; fail "nmap did not scan $server4"; }
    if ((strict)); then
        grep -Eq '^8080/tcp +open\|filtered' "$work/nmap.out" || { cat "$work/nmap.out" >&2; fail "nmap did not see 8080 as open|filtered"; }
    fi
    say "$name: $(grep -E '^Not shown|scanned in' "$work/nmap.out" | paste -sd';' | tr -s ' ')"
    ;;
hping-ack-flood)
    hping_flood "Tcp InSegs" -A -p 8080
    ;;
hping-udp-flood-large)
    rate=${MLD_SCENARIO_RATE:-20000}
    hping_flood "Udp NoPorts" --udp -p 9 -k -d 1400
    ;;
ssh-brute-force)
    # OpenSSH's sshd on the server (tests/lab/lab.sh up), 3 passwords per connection
    # (SSH_ASKPASS supplies a guess each time it is asked), 4 clients in parallel, each
    # connecting every 2.4 s: about 50 connections in 30 s, as a patient guesser does.
    cat >"$work/askpass" <<'ASK'
#!/bin/sh
words="123456 password admin letmein qwerty welcome monkey dragon master shadow"
set -- $words
shift $(( $(od -An -N1 -tu1 /dev/urandom) % 9 ))
echo "$1"
ASK
    chmod 0755 "$work/askpass"
    : >"$work/ssh.out"
    worker() {
        local end=$((SECONDS + seconds)) n=0
        while ((SECONDS < end)); do
            run_in a 15 env SSH_ASKPASS="$work/askpass" SSH_ASKPASS_REQUIRE=force ssh -n -o BatchMode=no -o PreferredAuthentications=password -o PubkeyAuthentication=no \
                -o NumberOfPasswordPrompts=3 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                -o ConnectTimeout=3 -o LogLevel=ERROR "admin@$server4" true >>"$work/ssh-$1.out" 2>&1 || true
            n=$((n + 1))
            sleep 2.4
        done
    }
    for w in 1 2 3 4; do worker "$w" & done
    wait
    cat "$work"/ssh-*.out >"$work/ssh.out"
    denied=$(grep -c 'Permission denied' "$work/ssh.out" || true)
    refused=$(grep -Ec 'timed out|Connection refused|Connection reset|closed by remote' "$work/ssh.out" || true)
    say "$name: ssh: $denied connections denied after their passwords, $refused cut off"
    ((denied > 0)) || { head -5 "$work/ssh.out" >&2; fail "no connection reached the password stage"; }
    ((strict == 0 || refused == 0)) || { head -5 "$work/ssh.out" >&2; fail "$refused connections did not reach the password stage"; }
    ;;
benign-dns-burst)
    # 50 queries a second: batches of 10 names (dig -f, each query from a new port) every
    # 0.2 s; every query must be answered.
    names=(lab.test www.lab.test mail.lab.test api.lab.test intranet.lab.test files.lab.test
           mx1.lab.test cdn.lab.test example.com debian.org)
    for n in "${names[@]}"; do echo "@$server4 +time=2 +tries=1 $n A"; done >"$work/batch"
    start_ns=$(date +%s%N) rounds=0
    while (($(date +%s%N) - start_ns < seconds * 1000000000)); do
        run_in c 10 dig -f "$work/batch" >>"$work/dig.out" 2>&1 &
        rounds=$((rounds + 1))
        pause_ns=$((start_ns + rounds * 200000000 - $(date +%s%N)))
        ((pause_ns <= 0)) || sleep "$(printf '%d.%09d' $((pause_ns / 1000000000)) $((pause_ns % 1000000000)))"
    done
    wait
    answered=$(grep -c '^;; ->>HEADER<<- opcode: QUERY, status: \(NOERROR\|REFUSED\)' "$work/dig.out" || true)
    say "$name: $answered of $((rounds * 10)) queries answered"
    ((answered == rounds * 10)) || { grep -m5 'timed out\|error' "$work/dig.out" >&2; fail "only $answered of $((rounds * 10)) queries were answered"; }
    ;;
benign-crawl)
    total=$((15 * seconds))
    run_in c $((seconds + 20)) curl -sS --rate 15/s -H 'Connection: close' -o /dev/null \
        -w '%{stderr}code %{http_code}\n' "http://$server4:8080/page[1-5].html?crawl=[1-$((3 * seconds))]" \
        >/dev/null 2>"$work/curl.err" || { cat "$work/curl.err" >&2; fail "curl failed"; }
    ok=$(grep -c '^code 200$' "$work/curl.err" || true)
    say "$name: $ok of $total pages answered 200"
    ((ok == total)) || fail "only $ok of $total pages answered 200"
    ;;
benign-iperf-http)
    client_fetches "$work/stop" "$work/fetches" &
    fetcher=$!
    run_in c $((seconds + 15)) iperf3 -c "$server4" -t "$seconds" -b 100M --connect-timeout 3000 -f m \
        >"$work/iperf.out" 2>&1 || { touch "$work/stop"; cat "$work/iperf.out" >&2; fail "iperf3 failed"; }
    touch "$work/stop"
    wait "$fetcher"
    read -r ok failed <"$work/fetches"
    say "$name: iperf3: $(grep -E 'receiver$' "$work/iperf.out" | tr -s ' ' | cut -d' ' -f5-8); $ok page fetches beside it, $failed failed"
    ((failed == 0 && ok > 0)) || fail "$failed of $((ok + failed)) page fetches beside the transfer failed"
    ;;
spoof-syn-client | spoof-udp-server)
    # The client proves itself first (page fetches and DNS: completed handshakes give the
    # client's and the server's addresses their paths), then the forged flood runs while
    # the client goes on fetching pages and resolving names; every fetch must succeed.
    for _ in 1 2 3 4 5 6; do
        run_in c 5 curl -sf -o /dev/null "http://$server4:8080/page2.html" || fail "the client's warm-up fetch failed"
        run_in c 5 dig +time=2 +tries=1 "@$server4" lab.test >/dev/null || fail "the client's warm-up query failed"
        sleep 0.2
    done
    client_fetches "$work/stop" "$work/fetches" &
    fetcher=$!
    if [[ "$name" == spoof-syn-client ]]; then
        hping_flood "Tcp InSegs" -S -p 8080 -a 10.66.1.2
    else
        client_before=$(snmp c Udp NoPorts)
        run_in a $((seconds * 3 + 10)) hping3 -q --udp -a "$server4" -s 53 -k -p 33434 -d 100 \
            -i "u$((1000000 / rate))" -c $((rate * seconds)) 10.66.1.2 >"$work/hping.out" 2>&1 || true
        grep -E '^[0-9]+ packets transmitted' "$work/hping.out" >&2 || { cat "$work/hping.out" >&2; fail "hping3 printed no statistics"; }
        grown=$(($(snmp c Udp NoPorts) - client_before))
        say "$name: the client received $grown forged datagrams"
        ((grown > 0)) || fail "no forged datagram reached the client"
    fi
    touch "$work/stop"
    wait "$fetcher"
    read -r ok failed <"$work/fetches"
    dns_ok=0
    run_in c 5 dig +time=2 +tries=2 "@$server4" lab.test >/dev/null && dns_ok=1
    say "$name: the client's page fetches during the flood: $ok answered, $failed failed; DNS after it: $dns_ok"
    ((failed == 0 && ok > 0 && dns_ok == 1)) || fail "the client lost service: $failed of $((ok + failed)) fetches failed, DNS answered: $dns_ok"
    ;;
benign-iperf)
    run_in c $((seconds + 15)) iperf3 -c "$server4" -t "$seconds" -b 8M --connect-timeout 3000 -f m \
        >"$work/iperf.out" 2>&1 || { cat "$work/iperf.out" >&2; fail "iperf3 failed"; }
    say "$name: iperf3: $(grep -E 'receiver$' "$work/iperf.out" | tr -s ' ' | cut -d' ' -f5-8)"
    ;;
benign-browse)
    # Page views until SECONDS are up: a page with its style sheet, script and image,
    # fetched 3 at a time like a browser (python's server speaks HTTP/1.0: one connection
    # each); every 4th view also downloads a file; every 3rd goes over IPv6; then the
    # reader thinks for 0.5-3 s.
    deadline=$((SECONDS + seconds)) views=0 objects=0
    while ((SECONDS < deadline)); do
        page=$(pick 1 5)
        base="http://$server4:8080"
        ((views % 3 == 2)) && base="http://[$server6]:8080"
        urls=("/page$page.html" /style.css /app.js "/img/photo$page.jpg")
        if ((views % 4 == 3)); then
            ((RANDOM % 2)) && urls+=(/report.pdf) || urls+=(/blob.bin)
        fi
        args=()
        for url in "${urls[@]}"; do args+=("$base$url" -o /dev/null); done
        run_in c 20 curl -sS --parallel --parallel-max 3 -w '%{http_code}\n' "${args[@]}" \
            >"$work/curl.out" 2>&1 || { cat "$work/curl.out" >&2; fail "curl failed on a page view of page$page"; }
        (($(grep -c '^200$' "$work/curl.out") == ${#urls[@]})) \
            || { cat "$work/curl.out" >&2; fail "a page view of page$page got an answer other than 200"; }
        views=$((views + 1)) objects=$((objects + ${#urls[@]}))
        think=$(pick 500 3000)
        ((SECONDS + think / 1000 < deadline)) || break
        sleep "$(ms "$think")"
    done
    say "$name: $views page views, $objects objects fetched"
    ;;
benign-dns)
    names=(lab.test www.lab.test mail.lab.test api.lab.test intranet.lab.test debian.org
           example.com wikipedia.org files.lab.test lab.test)
    types=(A A A AAAA MX A TXT A)
    deadline=$((SECONDS + seconds)) queries=0
    while ((SECONDS < deadline)); do
        query=${names[$(pick 0 $((${#names[@]} - 1)))]}
        type=${types[$(pick 0 $((${#types[@]} - 1)))]}
        # dig exits 0 once it has an answer, whatever its rcode (dnsmasq has no upstream:
        # names outside lab.test are REFUSED, like a resolver that is not theirs).
        run_in c 10 dig +time=2 +tries=1 "@$server4" "$query" "$type" >"$work/dig.out" 2>&1 \
            || { cat "$work/dig.out" >&2; fail "dig $query $type got no answer"; }
        queries=$((queries + 1))
        think=$(pick 300 1500)
        ((SECONDS + think / 1000 < deadline)) || break
        sleep "$(ms "$think")"
    done
    say "$name: $queries queries answered"
    ;;
benign-ping)
    run_in c $((seconds + 10)) ping -q -c "$seconds" -i 1 -w $((seconds + 5)) "$server4" >"$work/ping4.out" 2>&1 &
    ping4=$!
    status6=0
    run_in c $((seconds + 10)) ping -6 -q -c "$seconds" -i 1 -w $((seconds + 5)) "$server6" >"$work/ping6.out" 2>&1 \
        || status6=$?
    status4=0
    wait "$ping4" || status4=$?
    ((status4 == 0)) || { cat "$work/ping4.out" >&2; fail "ping $server4 failed (status $status4)"; }
    ((status6 == 0)) || { cat "$work/ping6.out" >&2; fail "ping $server6 failed (status $status6)"; }
    say "$name: $(grep -h 'packets transmitted' "$work/ping4.out" "$work/ping6.out" | paste -sd';')"
    ;;
benign-http-burst)
    # 20 requests per second for SECONDS: 20 small JSON documents, SECONDS times, each on
    # a new connection (HTTP/1.0 server, and Connection: close), like a busy API client.
    total=$((20 * seconds))
    run_in c $((seconds + 20)) curl -sS --rate 20/s -H 'Connection: close' -o /dev/null \
        -w '%{stderr}code %{http_code}\n' "http://$server4:8080/api/item[1-20].json?round=[1-$seconds]" \
        >/dev/null 2>"$work/curl.err" || { cat "$work/curl.err" >&2; fail "curl failed"; }
    ok=$(grep -c '^code 200$' "$work/curl.err" || true)
    say "$name: $ok of $total requests answered 200"
    ((ok == total)) || { grep -v '^code 200$' "$work/curl.err" | head >&2; fail "only $ok of $total requests answered 200"; }
    ;;
benign-idle)
    run_in c $((seconds + 15)) python3 "$here/traffic.py" idle "$server4" 7007 "$seconds" \
        --connections 3 --period 4 --seed "$seed" >"$work/idle.out" 2>&1 \
        || { cat "$work/idle.out" >&2; fail "an echo session failed"; }
    say "$name: $(paste -sd';' "$work/idle.out")"
    ;;
*)
    fail "scenario listed but not implemented"
    ;;
esac
say "$name: ok"
