#!/usr/bin/env bash
# Installs what the tests use besides Rust and Go, each only when it is missing, so `make test`
# works on a fresh machine and costs nothing on a prepared one.
#   - pyone (PyPI): OpenNebula's own Python bindings check the XML-RPC simulator.
#   - moto[server] (PyPI): the EC2 peer of the EC2 driver's tests.
#   - pyspark (PyPI): Spark standalone for the mapreduce service.
#   - the Debian daemons of the web hosting services (install-daemons.sh).
set -euo pipefail

"$(dirname "$0")/install-daemons.sh"

pip_install() {
  python3 -m pip install -q --root-user-action=ignore "$@"
}

python3 -c 'import pyone' 2>/dev/null || pip_install 'pyone==7.3.*'
python3 -c 'import moto.server, flask' 2>/dev/null || pip_install 'moto[server]==5.*'
# The mapreduce service's Spark (the jars and bin/spark-class; about 460 MB).
python3 -c 'import pyspark' 2>/dev/null || pip_install 'pyspark==4.3.0'
