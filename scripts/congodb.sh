#!/usr/bin/env bash
# Installs CongoDB, the MongoDB-wire-compatible in-memory server the MongoDB store's tests run
# against (social-app/store/tests/mongo.rs): real MongoDB is not installable everywhere, CongoDB
# is plain JavaScript. It ships inside the npm package @push.rocks/smartmongo, whose other half
# (mongodb-memory-server) downloads a MongoDB binary when installed: so the package is unpacked
# by hand and only CongoDB's own runtime dependencies are installed, with scripts disabled.
#
#   bash scripts/congodb.sh            # idempotent; prints the install directory
#   node scripts/congodb-server.mjs 27018
#
# Installs into $CONGODB_DIR (default ~/.cache/hub/congodb, outside the clone). Needs node and
# npm.
set -euo pipefail

VERSION=2.2.0
DIR="${CONGODB_DIR:-$HOME/.cache/hub/congodb}"
MARK="$DIR/.installed-smartmongo-$VERSION"
ENTRY="$DIR/smartmongo/dist_ts/congodb/index.js"

if [ -f "$MARK" ] && [ -f "$ENTRY" ] && [ -d "$DIR/node_modules/mingo" ]; then
  echo "$DIR"
  exit 0
fi

command -v node >/dev/null || { echo "congodb.sh: node is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "congodb.sh: npm is required" >&2; exit 1; }

echo "congodb.sh: installing @push.rocks/smartmongo@$VERSION (CongoDB only) into $DIR" >&2
rm -rf "$DIR"
mkdir -p "$DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1. The package itself, unpacked next to (not inside) node_modules, so npm never sees it and
#    never resolves its dependency on mongodb-memory-server.
(cd "$tmp" && npm pack "@push.rocks/smartmongo@$VERSION" --silent >/dev/null)
tar -xzf "$tmp"/push.rocks-smartmongo-"$VERSION".tgz -C "$tmp"
mv "$tmp/package" "$DIR/smartmongo"

# 2. What dist_ts/congodb imports (congodb.plugins.js; the rest is relative imports and node's
#    `net`), at the ranges smartmongo's package.json gives them. Not installed: mongodb-memory-
#    server, @push.rocks/smartdata and @push.rocks/mongodump, used only by the SmartMongo class.
cat > "$DIR/package.json" <<'JSON'
{
  "name": "hub-congodb",
  "private": true,
  "type": "module",
  "description": "CongoDB from @push.rocks/smartmongo, for the social-app store tests"
}
JSON
(cd "$DIR" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error \
  "@push.rocks/smartfs@^1.3.1" \
  "@push.rocks/smartpath@^5.0.11" \
  "@push.rocks/smartpromise@^4.0.3" \
  "@push.rocks/smartrx@^3.0.0" \
  "bson@^6.10.0" \
  "mingo@^7.2.0" >&2)

# 3. Check that it loads.
(cd "$DIR" && node --input-type=module -e "
  const m = await import('./smartmongo/dist_ts/congodb/index.js');
  if (typeof m.CongoServer !== 'function') { console.error('no CongoServer export'); process.exit(1); }
") >&2

touch "$MARK"
echo "$DIR"
