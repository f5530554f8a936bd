#!/bin/sh
# certbot deploy hook for a pagemesh node (docs/operations.md, "A public node on a VPS").
#
# certbot runs it after it got or renewed a certificate, with /bin/sh (dash on Debian: no
# brace expansion, no bash), RENEWED_LINEAGE set to /etc/letsencrypt/live/NAME. It copies
# that lineage's fullchain.pem and privkey.pem where the node reads them, owned by the
# node's user, the key mode 0600 (the node refuses any other), each file replaced whole
# (written beside it, then renamed: the node never reads half a file), then reloads the
# node (SIGHUP: new handshakes get the new pair, connected clients stay) and, when it
# runs, nginx (its own copy is the lineage itself). The same hook serves
#   - a node that serves TLS itself (tls_cert, tls_key), and
#   - a node behind nginx whose relay speaks TURN over TLS (relay_tls_cert,
#     relay_tls_key): a copy of the proxy's certificate, readable by the node's user.
#
#   install -m 755 pagemesh-certbot-hook.sh /usr/local/sbin/pagemesh-certbot-hook
#   useradd --system --home-dir /var/lib/pagemesh --shell /usr/sbin/nologin pagemesh
#   mkdir -m 700 /etc/pagemesh/tls && chown pagemesh: /etc/pagemesh/tls
#   certbot certonly --standalone -d node.example.net \
#       --deploy-hook /usr/local/sbin/pagemesh-certbot-hook
#
# certbot keeps the --deploy-hook given to `certonly` in the lineage's renewal file
# (/etc/letsencrypt/renewal/NAME.conf), so every renewal runs it too. To run it by hand:
#   RENEWED_LINEAGE=/etc/letsencrypt/live/node.example.net /usr/local/sbin/pagemesh-certbot-hook
#
# Settings (environment, else these defaults):
#   PAGEMESH_TLS_DIR   where the node reads the pair      /etc/pagemesh/tls
#   PAGEMESH_USER      the node's user (owns the copies)  pagemesh
#   PAGEMESH_UNIT      the node's systemd unit            pagemesh-node
#   PAGEMESH_PROXY     the proxy's unit, reloaded if it runs ("" for none)  nginx
#
# tests/deploy/test_certbot_hook.py runs this file with sh against a fake lineage.

set -eu

lineage=${RENEWED_LINEAGE:?"certbot sets RENEWED_LINEAGE for a deploy hook (run it by hand with RENEWED_LINEAGE=/etc/letsencrypt/live/NAME)"}
dir=${PAGEMESH_TLS_DIR:-/etc/pagemesh/tls}
user=${PAGEMESH_USER:-pagemesh}
unit=${PAGEMESH_UNIT:-pagemesh-node}
proxy=${PAGEMESH_PROXY-nginx}

umask 077
if [ ! -d "$dir" ]; then
    mkdir -m 700 "$dir"
    chown "$user" "$dir"
fi

# copy NAME MODE: $lineage/NAME to $dir/NAME, owned by $user, replaced in one rename.
copy() {
    install -m "$2" -o "$user" "$lineage/$1" "$dir/.$1.new"
    mv -f "$dir/.$1.new" "$dir/$1"
}

copy fullchain.pem 644
copy privkey.pem 600

if systemctl is-active --quiet "$unit"; then
    systemctl reload "$unit"
fi
if [ -n "$proxy" ] && systemctl is-active --quiet "$proxy"; then
    systemctl reload "$proxy"
fi
