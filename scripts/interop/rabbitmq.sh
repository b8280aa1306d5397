#!/usr/bin/env bash
# Runs a private RabbitMQ 3.10 (Debian's rabbitmq-server, AMQP 1.0 plugin) for the interop tests, on loopback only,
# with all its state under DIR, until its standard input closes: the test process that started it holds that pipe,
# so the broker never outlives the tests. Then it stops the server and its epmd by PID.
#
#   rabbitmq.sh DIR AMQP_PORT DIST_PORT EPMD_PORT [TLS_PORT CA_PEM CERT_PEM KEY_PEM]
#
# With the last four, RabbitMQ also serves AMQP over TLS on 127.0.0.1:TLS_PORT (`listeners.ssl`), presenting
# CERT_PEM (signed by CA_PEM) with KEY_PEM; the test makes them at test time and the script copies them into
# DIR, since RabbitMQ reads its certificates from disk when it starts. Client certificates are not asked for.
#
# Prints `ready` once the server has finished booting (its log says so), or exits 1 with the log's tail.
set -euo pipefail

if [ $# -ne 4 ] && [ $# -ne 8 ]; then
    echo "usage: $0 DIR AMQP_PORT DIST_PORT EPMD_PORT [TLS_PORT CA_PEM CERT_PEM KEY_PEM]" >&2
    exit 2
fi
dir=$1 amqp_port=$2 dist_port=$3 epmd_port=$4
tls_port=${5:-}

server=$(dpkg -L rabbitmq-server 2>/dev/null | grep '/lib/rabbitmq/bin/rabbitmq-server$' | head -n1 || true)
if [ -z "$server" ] || [ ! -x "$server" ]; then
    echo "rabbitmq.sh: rabbitmq-server is not installed (scripts/install-test-deps.sh installs it)" >&2
    exit 1
fi
epmd=$(command -v epmd || ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -n1 || true)
if [ -z "$epmd" ]; then
    echo "rabbitmq.sh: epmd not found" >&2
    exit 1
fi

rm -rf "$dir"
mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$amqp_port
loopback_users.guest = true
amqp1_0.default_user = guest
amqp1_0.protocol_strict_mode = false
CONF
if [ -n "$tls_port" ]; then
    mkdir -p "$dir/tls"
    cp "$6" "$dir/tls/ca.pem"
    cp "$7" "$dir/tls/server.pem"
    cp "$8" "$dir/tls/server-key.pem"
    chmod 600 "$dir/tls/server-key.pem"
    cat >>"$dir/rabbitmq.conf" <<CONF
listeners.ssl.default = 127.0.0.1:$tls_port
ssl_options.cacertfile = $dir/tls/ca.pem
ssl_options.certfile = $dir/tls/server.pem
ssl_options.keyfile = $dir/tls/server-key.pem
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
CONF
fi
echo '[rabbitmq_amqp1_0].' >"$dir/enabled_plugins"

export HOME=$dir/home
export RABBITMQ_NODENAME=rabbit@localhost
export RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
export RABBITMQ_MNESIA_BASE=$dir/mnesia
export RABBITMQ_LOG_BASE=$dir/log
export RABBITMQ_PID_FILE=$dir/rabbit.pid
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$amqp_port
export RABBITMQ_DIST_PORT=$dist_port
export ERL_EPMD_ADDRESS=127.0.0.1
export ERL_EPMD_PORT=$epmd_port
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

pids=()
stop() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
}
trap stop EXIT

# Our own epmd, so that we know its PID (the server would otherwise start a daemon we could not name).
"$epmd" -port "$epmd_port" -address 127.0.0.1 </dev/null >"$dir/log/epmd.out" 2>&1 &
pids+=($!)
"$server" </dev/null >"$dir/log/server.out" 2>&1 &
pids=($! "${pids[@]}")

deadline=$((SECONDS + 90))
until grep -qs 'Server startup complete' "$dir"/log/*.log "$dir/log/server.out"; do
    if ! kill -0 "${pids[0]}" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
        echo "rabbitmq.sh: RabbitMQ did not start; the end of its logs:" >&2
        tail -n 40 "$dir/log/server.out" "$dir"/log/*.log >&2 || true
        exit 1
    fi
    sleep 0.2
done
if [ -n "$tls_port" ] && ! grep -qs "started TLS (SSL) listener on 127.0.0.1:$tls_port" "$dir"/log/*.log; then
    echo "rabbitmq.sh: RabbitMQ started without its TLS listener on $tls_port; the end of its log:" >&2
    tail -n 40 "$dir"/log/*.log >&2 || true
    exit 1
fi
echo ready

# Until the test process closes our standard input.
cat >/dev/null || true
