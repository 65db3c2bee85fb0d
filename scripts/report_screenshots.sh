#!/usr/bin/env bash
# Screenshots of the clinical report (docs/clinical-outputs.md, README.md): page 1 of the hippocampus report in
# English and in Chinese, from a real run on the HCropVolume series of ../shared/data/dicom/mr_study.
# Run from the repository root: bash scripts/report_screenshots.sh
set -euo pipefail
DEEPMIA=${DEEPMIA:-.venv/bin/deepmia}
SERIES=${SERIES:-../shared/data/dicom/mr_study/Study3/11_HCropVolume}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$DEEPMIA" predict models/hippocampus "$SERIES" "$tmp/pred"
for lang in en zh; do
  "$DEEPMIA" report "$tmp/pred" --out "$tmp/report_$lang.pdf" --lang "$lang"
  pdftoppm -r 80 -f 1 -l 1 -singlefile -png "$tmp/report_$lang.pdf" "docs/images/report_hippocampus_$lang"
done
ls -l docs/images/report_hippocampus_*.png
