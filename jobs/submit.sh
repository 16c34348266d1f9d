#!/usr/bin/env bash
# Submit a geoseg job to a running Ray cluster with Ray Jobs.
#   RAY_ADDRESS=http://head:8265 jobs/submit.sh jobs/water_sentinel2.yaml
# The cluster's image must have geoseg installed (pip install geoseg, or the repo with
# `pip install .`); the spec travels in the working directory. Inputs and the output store must
# be paths every node can read and write (a shared file system).
set -euo pipefail
spec=${1:?usage: jobs/submit.sh SPEC.yaml [extra geoseg run flags]}
shift
exec ray job submit --working-dir "$(dirname "$spec")" -- python -m geoseg run "$(basename "$spec")" --no-progress "$@"
