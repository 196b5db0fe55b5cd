#!/usr/bin/env bash
# Makes a development CA and one server certificate for the citypulse NATS cluster, with openssl.
# DEVELOPMENT ONLY: the CA key sits next to the certificates, unencrypted. In production use your
# PKI (cert-manager, Vault, ...) and mount the same three files.
#
#   deploy/tls/gen-dev-certs.sh [OUT_DIR] [EXTRA_SAN ...]
#
# OUT_DIR defaults to deploy/tls/dev (git-ignored). Writes:
#   ca.pem, ca-key.pem          the dev CA (10 years); clients trust ca.pem
#   server.pem, server-key.pem  one certificate for every node, valid for server AND client auth,
#                               because cluster routes use it both ways (mutual TLS between nodes)
# The certificate names every host a node is reached by: the compose service names (nats-1..3),
# the Kubernetes pods and services (nats-0..2.nats-headless.citypulse.svc, nats...), localhost
# and 127.0.0.1. Extra SANs (e.g. DNS:nats.example.org, IP:10.0.0.5) may follow OUT_DIR.
# Existing files are kept (rerun after deleting OUT_DIR to rotate).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$here/dev}
shift || true
days_ca=3650
days_server=825 # the most that Apple/Chrome clients accept for a leaf certificate

command -v openssl >/dev/null || { echo "gen-dev-certs: openssl not found (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$out"
cd "$out"

if [[ -f server.pem && -f server-key.pem && -f ca.pem ]]; then
    echo "gen-dev-certs: certificates present in $out (delete the directory to make new ones)"
    exit 0
fi

sans=(
    DNS:localhost IP:127.0.0.1 IP:::1
    DNS:nats DNS:nats-1 DNS:nats-2 DNS:nats-3
    DNS:nats.citypulse.svc DNS:nats.citypulse.svc.cluster.local
    DNS:*.nats.citypulse.svc DNS:*.nats.citypulse.svc.cluster.local
    DNS:nats-headless.citypulse.svc DNS:*.nats-headless.citypulse.svc
    DNS:*.nats-headless.citypulse.svc.cluster.local
)
for extra in "$@"; do sans+=("$extra"); done
san_list=$(IFS=,; echo "${sans[*]}")

umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca-key.pem -out ca.pem -days "$days_ca" -subj "/O=citypulse dev/CN=citypulse dev CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout server-key.pem -out server.csr -subj "/O=citypulse dev/CN=nats" 2>/dev/null
cat >server.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san_list
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
    -out server.pem -days "$days_server" -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca.srl
# Readable by the non-root users the containers run as; the keys stay private to the owner.
chmod 644 ca.pem server.pem
chmod 600 ca-key.pem
chmod 644 server-key.pem # dev only: the nats container user must read it from a bind mount
openssl verify -CAfile ca.pem server.pem >/dev/null
echo "gen-dev-certs: wrote ca.pem, server.pem, server-key.pem to $out"
