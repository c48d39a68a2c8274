#!/bin/sh
# Copy the minified builds of the pinned libraries (installed by `npm ci`) into the
# Python package's static folder. Run by `make dashboard-assets`; the copies are
# committed so that installing lumos_ray never needs Node.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/../lumos_ray/serve/_dashboard/static/vendor"
mkdir -p "$dest"
cp "$here/node_modules/htmx.org/dist/htmx.min.js" "$dest/htmx.min.js"
cp "$here/node_modules/uplot/dist/uPlot.iife.min.js" "$dest/uPlot.iife.min.js"
cp "$here/node_modules/uplot/dist/uPlot.min.css" "$dest/uPlot.min.css"
cp "$here/node_modules/htmx.org/LICENSE" "$dest/htmx.LICENSE"
cp "$here/node_modules/uplot/LICENSE" "$dest/uPlot.LICENSE"
echo "copied to $dest:"
ls -l "$dest"
