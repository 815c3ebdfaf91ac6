#!/bin/sh
# TEST / DEMO ONLY — the compose stack's one-shot `keys` service.
#
# Generates the simulator's TEST ONLY keys into the `payhook-demo` volume on the first
# start (kept across restarts; `docker compose down -v` forgets them), then writes the
# payhook configuration the worker and payhook-admin read (payhook.toml):
# deploy/compose/payhook.toml + the merchant sections `payhook-sim keys` prints the
# path of (the same way scripts/demo builds its configuration), and the receiver's
# (receiver.toml): the same without the signing private keys, which the receiver
# refuses to hold. No key is committed.
set -eu

state=${PAYHOOK_STATE_DIR:-/var/lib/payhook}
base=${PAYHOOK_BASE_CONFIG:-/etc/payhook/compose/payhook.toml}

snippet=$(payhook-sim keys --keys-dir "$state/keys")
umask 077
# The admin API's operate token (worker.admin_tokens in payhook.toml; the `admin`
# service sends it): random, kept across restarts like the keys.
if [ ! -s "$state/admin-token" ]; then
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$state/admin-token.tmp"
  mv "$state/admin-token.tmp" "$state/admin-token"
fi
cat "$base" "$snippet" >"$state/payhook.toml.tmp"
mv "$state/payhook.toml.tmp" "$state/payhook.toml"
grep -v -E '^(app_private_key|merchant_private_key) ' "$state/payhook.toml" >"$state/receiver.toml.tmp"
mv "$state/receiver.toml.tmp" "$state/receiver.toml"
echo "keys: wrote $state/payhook.toml and $state/receiver.toml (merchant m1; TEST ONLY keys in $state/keys)"
