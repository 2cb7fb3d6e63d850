#!/bin/sh
# The image's install and compile steps, run by deploy/Dockerfile and, without
# Docker, by test/integration/image.test.ts (which replays the Dockerfile's
# COPY and RUN steps in a temporary directory): one copy of the commands.
#
#   sh deploy/image.sh build   in the build stage: every dependency, then
#                              compile to dist/ (and the PGlite template)
#   sh deploy/image.sh deps    in the deps stage: production dependencies only
#
# --ignore-scripts: no package's install script runs in the image (the `node`
# dev dependency's would download a second Node.js; the image has its own).
# The image's own node runs the build, so no npm script is needed either.
set -eu
npm_ci() { npm ci --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error "$@"; }

case "${1:-}" in
  build)
    # In Docker node_modules is never there (.dockerignore); the image test
    # lends the build stage its checkout's, installed from the same lockfile.
    [ -d node_modules ] || npm_ci
    node scripts/build.mjs
    ;;
  deps)
    npm_ci --omit=dev
    # patches/ fixes bugs in dependencies (see patches/README.md); install
    # scripts are off here, so patch-package (a production dependency for this
    # reason) is run by name. It fails the build if a patch no longer applies.
    npx --no-install patch-package --error-on-fail
    npm cache clean --force 2>/dev/null
    ;;
  *)
    echo "usage: sh deploy/image.sh build|deps" >&2
    exit 2
    ;;
esac
