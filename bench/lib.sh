# Shared by the bench scripts: `. "$here/bench/lib.sh"`.

# wait_port PORT [PID] [TRIES]: waits until something listens on 127.0.0.1:PORT (polling every
# 0.2 s, TRIES times, 300 by default); fails at once if process PID (when given) has exited.
wait_port() {
    local port=$1 pid=${2:-} tries=${3:-300}
    for _ in $(seq "$tries"); do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            echo "the server for port $port exited" >&2
            return 1
        fi
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.2
    done
    echo "nothing listening on $port" >&2
    return 1
}
