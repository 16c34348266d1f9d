#!/usr/bin/env bash
# Submit a geoseg job to a running Ray cluster with Ray Jobs:
#   RAY_ADDRESS=http://HEAD:8265 jobs/submit.sh jobs/water_sentinel2.yaml [-- extra geoseg run flags]
# It runs `geoseg submit`: only the spec travels (no folder upload, so no old output store goes
# with it), its paths made absolute. The cluster's nodes need geoseg installed and must read the
# inputs and write the output at those paths (a shared file system). Relative paths in the spec
# are refused for a remote cluster, with the reason.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=${GEOSEG_PYTHON:-$here/.venv/bin/python}
[ -x "$python" ] || python=$(command -v python3)
exec "$python" -m geoseg.cli submit "$@"
