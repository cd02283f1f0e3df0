# shellcheck shell=bash
# dev_loop_env KITS: starts ../shared/dev-loop (Docker engine, Tilt, the kind shim) and takes
# its environment (DOCKER_HOST, PATH, ...) into this shell.
#
# Not `eval "$(bash install.sh)"`: when install.sh starts dockerd, dockerd inherits the
# command substitution's pipe (install.sh keeps its stdout on fd 3, which the background
# dockerd does not close), so `$(...)` waits for an end of file that comes only when dockerd
# stops: the script hangs after "install done". A file has no such wait.
dev_loop_env() {
  local env_file
  env_file=$(mktemp -t statuslist-dev-loop-env.XXXXXX)
  if ! bash "$1/dev-loop/install.sh" >"$env_file" 3>&-; then
    rm -f "$env_file"
    echo "dev-loop: install.sh failed" >&2
    return 1
  fi
  eval "$(cat "$env_file")"
  rm -f "$env_file"
}
