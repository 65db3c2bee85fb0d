#!/usr/bin/env bash
# Vendor the web viewer's browser library (NiiVue) into the Python package, so `deepmia serve` needs no CDN and
# no npm at run time. Installs exactly what viewer/package-lock.json pins (`npm ci`), then copies NiiVue's
# self-contained ESM bundle (dist/index.js: NiiVue and the libraries it bundles, no imports left) and the licences
# into deepmia/service/static/vendor/niivue/. The copied files are committed; rerun after changing the version.
# Usage: bash scripts/build_viewer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null || { echo "build_viewer: npm not found; install Node.js (npm) and rerun" >&2; exit 1; }
(cd viewer && npm ci --ignore-scripts --no-audit --no-fund)
pkg=viewer/node_modules/@niivue/niivue
out=deepmia/service/static/vendor/niivue
mkdir -p "$out"
# the bundle must be self-contained (no bare imports): the browser loads it as one module
if grep -qE '^import .* from ' "$pkg/dist/index.js"; then
  echo "build_viewer: $pkg/dist/index.js imports other modules; bundle it with esbuild first" >&2; exit 1
fi
# drop the source-map comment (the 4.8 MB map is not shipped) and apply deepmia's one patch: NiiVue computes the
# gradient texture (lighting of the 3D render) on every refresh of the background volume; with opts.deferGradient
# set it skips it, and the viewer computes it (nv.gradientGL) only when a 3D view is shown. A 512x512x300 CT's
# gradient took minutes on a CPU renderer (SwiftShader) and is not needed for the 2D views.
sed '/^\/\/# sourceMappingURL=/d' "$pkg/dist/index.js" | node -e '
  let s = require("fs").readFileSync(0, "utf8")
  const from = "      this.volumeTexture = outTexture;\n      this.gradientTexture = gradientGL({"
  const to = "      this.volumeTexture = outTexture;\n      if (!this.opts.deferGradient) this.gradientTexture = gradientGL({"
  if (s.split(from).length !== 2) { console.error("build_viewer: the gradient patch no longer applies; update it"); process.exit(1) }
  process.stdout.write(s.replace(from, "/* deepmia patch, see scripts/build_viewer.sh */\n" + to))
' > "$out/niivue.tmp.js"
version=$(node -p "require('./$pkg/package.json').version")
{
  echo "NiiVue $version (npm @niivue/niivue, https://github.com/niivue/niivue), file dist/index.js as niivue.js,"
  echo "modified by deepmia (scripts/build_viewer.sh): the 3D gradient texture can be deferred (opts.deferGradient)."
  echo "It bundles the libraries listed below; each licence follows NiiVue's."
  echo
  cat viewer/LICENSE.niivue
  # the third-party libraries inside the bundle (dist/metafile-esm.json lists its inputs)
  for dep in $(node -e "
    const m = require('./$pkg/dist/metafile-esm.json'); const s = new Set();
    for (const k of Object.keys(m.inputs)) { const r = k.match(/node_modules\/((@[^/]+\/)?[^/]+)/); if (r) s.add(r[1]); }
    console.log([...s].sort().join(' '));"); do
    lic=$(ls viewer/node_modules/"$dep" | grep -i -m1 -E '^licen[cs]e' || true)
    ver=$(node -p "require('./viewer/node_modules/$dep/package.json').version")
    echo; echo "---- $dep $ver ----"
    if [ -n "$lic" ]; then cat "viewer/node_modules/$dep/$lic"
    else echo "License: $(node -p "require('./viewer/node_modules/$dep/package.json').license")"; fi
  done
} > "$out/LICENSE"
# the licences also open the bundle as a comment, so they travel with the file wherever it is copied
{ echo "/*! NiiVue and bundled libraries: licences (also in LICENSE beside this file)"; sed 's#\*/#* /#g' "$out/LICENSE"
  echo "*/"; cat "$out/niivue.tmp.js"; } > "$out/niivue.js"
rm "$out/niivue.tmp.js"
echo "build_viewer: $out/niivue.js $(wc -c < "$out/niivue.js") bytes, NiiVue $version"
