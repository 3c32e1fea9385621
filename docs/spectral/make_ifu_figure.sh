#!/usr/bin/env bash
# Regenerates docs/spectral/ifu_maps.png: the walk of ifu.rst on the real MUSE minicube that
# ships with mpdaf and the E-MILES models that ship with ppxf 8.2.6 (about a minute).
set -euo pipefail
out=$(mktemp -d)
py=${PYTHON:-python}
cube=$($py -c "import mpdaf, os; print(os.path.dirname(mpdaf.__file__))")/data/sdetect/minicube.fits
lib=$($py -c "import ppxf, os; print(os.path.dirname(ppxf.__file__))")/miles_models
$py -m nnfit spectral init "$cube" --templates "$lib" --template-pattern 'Eun1.30Z[mp]0.[024]*.fits' \
    --age-range 1 16 --redshift 0.0863 --target-sn 15 --lam-range 4800 7000 \
    --kinematics ppxf --ppxf-moments 4 --out "$out/a478.h5"
$py -m nnfit spectral fit "$out/a478.h5" --per-bin --degree 4 --regul 3 --no-progress
$py -m nnfit spectral maps "$out/a478.h5" --out "$out/maps"
cp "$out/maps/maps.png" "$(dirname "$0")/ifu_maps.png"
rm -rf "$out"
