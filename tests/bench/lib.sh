# shellcheck shell=bash disable=SC2034 # sig_bin and load_bin are the caller's
# Shared by tests/bench/{run,redis-scale,ab}. Sourced, not executed; the caller defines
# say and die, and runs from the repository root.

# cargo_target_dir: where cargo puts its builds (CARGO_TARGET_DIR, else the workspace's).
cargo_target_dir() {
  echo "${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
}

# build_signaling_and_load: the release otter-signaling and otter-load; sets sig_bin, load_bin.
build_signaling_and_load() {
  local target
  target=$(cargo_target_dir)
  say "cargo build --release (otter-signaling, otter-load)"
  # Two builds: a --bin filter applies to every package named, so one command would skip the server.
  cargo build --release --quiet -p otter-signaling
  cargo build --release --quiet -p otter-load
  sig_bin="$target/release/otter-signaling"
  load_bin="$target/release/otter-load"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT WHAT: until something listens on 127.0.0.1:PORT (20 s), else die naming WHAT.
wait_port() {
  local port=$1 what=$2 i
  for ((i = 0; i < 400; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  die "$what did not listen on 127.0.0.1:$port"
}
