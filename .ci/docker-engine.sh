# Sourced by .ci/run: a Docker engine for the Docker runner's tests (tests/test_docker_*.py).
#
# Uses an engine that already answers ($DOCKER_HOST or the default socket); otherwise installs
# docker.io (as root) and starts a private dockerd with its own data root, socket and PID under
# /tmp, exporting DOCKER_HOST for the tests. stop_docker_engine stops only that dockerd, by its
# PID. Never fatal: without an engine the Docker tests skip and say why.

GRADER_DOCKERD_PID=""
GRADER_DOCKERD_DIR=""

docker_engine_answers() {
  command -v docker >/dev/null 2>&1 && timeout 20 docker version >/dev/null 2>&1
}

start_docker_engine() {
  if docker_engine_answers; then
    echo "docker-engine: using the engine at ${DOCKER_HOST:-the default socket}" >&2
    return 0
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      echo "docker-engine: dockerd is not installed and this is not root; Docker tests will skip" >&2
      return 1
    fi
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null) || {
      echo "docker-engine: could not install docker.io; Docker tests will skip" >&2
      return 1
    }
  fi
  GRADER_DOCKERD_DIR=$(mktemp -d /tmp/grader-dockerd.XXXXXX)
  dockerd --data-root "$GRADER_DOCKERD_DIR/data" --exec-root "$GRADER_DOCKERD_DIR/exec" \
    --pidfile "$GRADER_DOCKERD_DIR/dockerd.pid" --host "unix://$GRADER_DOCKERD_DIR/docker.sock" \
    >"$GRADER_DOCKERD_DIR/dockerd.log" 2>&1 &
  GRADER_DOCKERD_PID=$!
  export DOCKER_HOST="unix://$GRADER_DOCKERD_DIR/docker.sock"
  for _ in $(seq 60); do
    if docker_engine_answers; then
      echo "docker-engine: dockerd $GRADER_DOCKERD_PID answers at $DOCKER_HOST" >&2
      return 0
    fi
    if ! kill -0 "$GRADER_DOCKERD_PID" 2>/dev/null; then
      break
    fi
    sleep 1
  done
  echo "docker-engine: dockerd did not come up; Docker tests will skip. Its log ends:" >&2
  tail -n 15 "$GRADER_DOCKERD_DIR/dockerd.log" >&2 || true
  stop_docker_engine
  unset DOCKER_HOST
  return 1
}

stop_docker_engine() {
  if [ -n "$GRADER_DOCKERD_PID" ] && kill -0 "$GRADER_DOCKERD_PID" 2>/dev/null; then
    kill -TERM "$GRADER_DOCKERD_PID"
    for _ in $(seq 30); do
      kill -0 "$GRADER_DOCKERD_PID" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$GRADER_DOCKERD_PID" 2>/dev/null; then
      kill -KILL "$GRADER_DOCKERD_PID"
    fi
    wait "$GRADER_DOCKERD_PID" 2>/dev/null || true
  fi
  GRADER_DOCKERD_PID=""
  if [ -n "$GRADER_DOCKERD_DIR" ]; then
    # dockerd leaves its bind mount of the network namespace behind; unmount what lies in its folder
    awk -v dir="$GRADER_DOCKERD_DIR/" 'index($2, dir) == 1 {print $2}' /proc/self/mounts | sort -r |
      while read -r mounted; do umount "$mounted" 2>/dev/null || true; done
    rm -rf "$GRADER_DOCKERD_DIR" 2>/dev/null || true
    GRADER_DOCKERD_DIR=""
  fi
}
