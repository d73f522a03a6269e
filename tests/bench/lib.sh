# shellcheck shell=bash disable=SC2034,SC2154 # sig_bin, load_bin, urls, pidargs are the caller's; results, here, say, die come from it
# Shared by tests/bench/{run,redis-scale,ab,profile}. Sourced, not executed; the caller defines
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

# Server setups (otter-memory, otter-redis-3, peerjs) for tests/bench/{run,profile}: the caller
# sets results (a directory for the servers' logs) and here, and traps cleanup on EXIT.
pids=()
cleanup() {
  local i
  # Newest first: replicas before their redis-server, which would otherwise log every late leave.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do wait "${pids[i]}" 2>/dev/null || true; done
  pids=()
}

# wait_ready PORT WHAT: until otter-signaling's /readyz answers 200 (in Redis mode: it holds its
# lease and its subscription), 20 s, else die naming WHAT.
wait_ready() {
  local port=$1 what=$2 i
  for ((i = 0; i < 400; i++)); do
    curl -fsS "http://127.0.0.1:$port/readyz" -o /dev/null 2>/dev/null && return 0
    sleep 0.05
  done
  die "$what on port $port was not ready in 20 s (its log: $results/$what.log)"
}
# Start servers for one setup; sets urls (otter-load --url args) and pidargs (--pid args).
# With pinning on, every server process runs on CPU 0 (the generator on CPU 1).
urls=()
pidargs=()
on_server_cpu=()
on_load_cpu=()
start_otter() { # NAME PORT [extra args]
  local name=$1 port=$2
  shift 2
  OTTER_LOG=error "${on_server_cpu[@]}" "$sig_bin" --listen "127.0.0.1:$port" "$@" >"$results/$name.log" 2>&1 &
  pids+=("$!")
  pidargs+=(--pid "$name=$!")
  urls+=(--url "ws://127.0.0.1:$port/ws")
  wait_ready "$port" "$name"
}
start_setup() {
  urls=()
  pidargs=()
  local port
  case "$1" in
    otter-memory)
      start_otter signaling "$(free_port)"
      ;;
    otter-redis-3)
      port="$(free_port)"
      "${on_server_cpu[@]}" redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --dir "$results" >"$results/redis.log" 2>&1 &
      local redis_pid=$!
      pids+=("$redis_pid")
      wait_port "$port" redis-server
      local r
      for r in 1 2 3; do
        start_otter "signaling-$r" "$(free_port)" --redis-url "redis://127.0.0.1:$port"
      done
      pidargs+=(--pid "redis-server=$redis_pid")
      ;;
    peerjs)
      port="$(free_port)"
      # node_modules/.bin/peerjs is what `npx peerjs` runs; exec'd directly so the pid
      # sampled is the server's own. Its per-connection log line goes to /dev/null.
      (cd "$here" && exec "${on_server_cpu[@]}" node_modules/.bin/peerjs --port "$port" --host 127.0.0.1 \
        --concurrent_limit 1000000) >/dev/null 2>"$results/peerjs.log" &
      pids+=("$!")
      pidargs+=(--pid "peerjs=$!")
      urls+=(--url "ws://127.0.0.1:$port/")
      wait_port "$port" peerjs
      ;;
  esac
}

