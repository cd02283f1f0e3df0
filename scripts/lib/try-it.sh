# Sourced by scripts/node-e2e, scripts/tilt-ci and scripts/kind-e2e: the issuer scenario
# through the chart's demo issuer, and a free port. The caller defines `say` (one line of
# output) and `fail` (says FAILED and exits).

# A free TCP port on ADDR (default 127.0.0.1).
free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "${1:-127.0.0.1}"; }

# Field NAME of the JSON object on stdin.
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# Attempts, 0.2 s apart, for the first /issue (the worker fetches the demo issuer's JWKS
# on first use).
TRY_IT_ISSUE_ATTEMPTS=${TRY_IT_ISSUE_ATTEMPTS:-50}

# Waits until entry IDX of URI shows EXPECTED as served (verified by the demo issuer at
# ISSUER), for up to 10 s: revocations are published within about a second.
expect_status() { # issuer uri idx expected
  local got=""
  for _ in $(seq 50); do
    got=$(curl -s "$1/check?uri=$2&idx=$3" || true)
    [ "$got" = "$4" ] && return 0
    sleep 0.2
  done
  fail "$2 entry $3 is '$got', expected $4"
}

# For each CLIENT, through the demo issuer at ISSUER: issue, VALID, (where its pool allows
# suspension: suspend, SUSPENDED, reinstate, VALID), revoke (202), INVALID.
try_it() { # issuer client...
  local issuer=$1 client answer uri idx code suspended
  shift
  for client in "$@"; do
    answer=""
    for _ in $(seq "$TRY_IT_ISSUE_ATTEMPTS"); do
      answer=$(curl -sf -X POST "$issuer/issue?client=$client" || true)
      [ -n "$answer" ] && break
      sleep 0.2
    done
    [ -n "$answer" ] || fail "/issue for $client: $(curl -s -X POST "$issuer/issue?client=$client")"
    uri=$(echo "$answer" | field uri)
    idx=$(echo "$answer" | field idx)
    expect_status "$issuer" "$uri" "$idx" VALID
    suspended=""
    answer=$(curl -s -w ' %{http_code}' -X POST "$issuer/suspend?client=$client&uri=$uri&idx=$idx")
    case "$answer" in
      *' 202')
        expect_status "$issuer" "$uri" "$idx" SUSPENDED
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$issuer/reinstate?client=$client&uri=$uri&idx=$idx")
        [ "$code" = 202 ] || fail "/reinstate for $client answered $code"
        expect_status "$issuer" "$uri" "$idx" VALID
        suspended=" suspended, SUSPENDED, reinstated, VALID,"
        ;;
      *'Suspension is not enabled'*' 403') ;;
      *) fail "/suspend for $client answered $answer" ;;
    esac
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$issuer/revoke?client=$client&uri=$uri&idx=$idx")
    [ "$code" = 202 ] || fail "/revoke for $client answered $code"
    expect_status "$issuer" "$uri" "$idx" INVALID
    say "$client: issued $uri entry $idx, VALID,$suspended revoked, INVALID as served"
  done
}
