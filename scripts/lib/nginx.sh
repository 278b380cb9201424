# shellcheck shell=bash
# nginx terminating TLS in front of a plain relay, for scripts/storm.sh and
# scripts/idle-memory.sh. Needs: LOAD (shardrelay-load, for a free port), PKI (a
# directory with cert.pem and key.pem), PUBLIC (the relay's plain public address), `die`;
# RELAY_CPU (optional) pins nginx.

# start_nginx DIR: nginx (one worker; master and worker pinned to RELAY_CPU if set) terminating
# TLS with the storm's pair on a free loopback port and proxying the upgrades to the plain
# relay at PUBLIC; sets FRONT_PID and points PUBLIC at nginx.
start_nginx() {
    local dir=$1 port tries=200
    rm -rf "$dir"    # a stale pid file from a reused OUT_DIR would pass the wait below
    mkdir -p "$dir/tmp"
    port=$("$LOAD" measure free-port)
    cat >"$dir/nginx.conf" <<NGINX
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 19000; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port ssl backlog=4096;
        ssl_certificate $PKI/cert.pem;
        ssl_certificate_key $PKI/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://$PUBLIC;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }
    }
}
NGINX
    ${RELAY_CPU:+taskset -c "$RELAY_CPU"} nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
        >"$dir/stdout" 2>&1 &
    FRONT_PID=$!
    # Listening once the master wrote its pid file and forked its worker.
    until [ -s "$dir/nginx.pid" ] && pgrep -P "$FRONT_PID" >/dev/null; do
        tries=$((tries - 1))
        [ $tries -gt 0 ] && kill -0 "$FRONT_PID" 2>/dev/null || die "nginx did not start ($dir)"
        sleep 0.05
    done
    PUBLIC=127.0.0.1:$port
}

