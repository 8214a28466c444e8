# Sourced by the scripts that run a pinned npm tool (conformance.sh, schema-portability.sh, build-mcpb.sh).
# npm_pinned <lock dir under scripts/> <target dir> <path that exists once installed>: `npm ci` the lock dir's
# package.json and package-lock.json into the target, unless that same lock file is installed there already.
# Bash 3.2 compatible (macOS).
npm_pinned() {
  mkdir -p "$2"
  if ! cmp -s "scripts/$1/package-lock.json" "$2/package-lock.json" || [ ! -e "$3" ]; then
    cp "scripts/$1/package.json" "scripts/$1/package-lock.json" "$2/"
    npm ci --prefix "$2" --no-audit --no-fund --loglevel=error
  fi
}
