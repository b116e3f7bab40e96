# Two entry points that work on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GX_ANALYTICS_ENABLED := false
export DAGSTER_HOME := $(CURDIR)/data/dagster_home

.PHONY: setup setup-scale demo test test-fast ui benchmarks clean

$(BIN)/curate: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU wheel of torch first (PyPI's Linux wheel of the same version pulls gigabytes of CUDA): from
	# PyTorch's CPU index, with no dependencies, so only this one package is looked up there; torch's own
	# dependencies come from the usual index with the project's
	$(BIN)/pip install -q --no-deps torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -q -e '.[test,scale]'
	# byte-compiled as pip compiles a regular install: where PYTHONDONTWRITEBYTECODE is set, every run
	# (and Ray worker) would compile the package again, about 0.6 s each
	$(BIN)/python -m compileall -q curation_pipeline
	touch $(BIN)/curate

setup: $(BIN)/curate

# The S3-compatible server the scale tests start on loopback (s3rver, from npm; needs Node.js).
S3RVER := $(VENV)/npm/node_modules/.bin/s3rver
$(S3RVER):
	npm install --no-save --no-audit --no-fund --prefix $(VENV)/npm s3rver@3.7.1

# Helm's template engine for the offline render of deploy/helm/curation-pipeline (Helm v4's Go SDK,
# bundled in a PyPI wheel: no helm binary installs offline). Test-only, so not in the scale extra.
HELM_SDK := $(VENV)/.helm-python-sdk-0.2.2
$(HELM_SDK): $(BIN)/curate
	$(BIN)/pip install -q helm-python-sdk==0.2.2
	touch $@

# dagster-k8s (the K8sRunLauncher deploy/helm/dagster-values.yaml configures) for the offline
# validation of that config only: its release pins dagster==1.13.27, which caps protobuf < 7 and
# breaks the tokenizers here, so it goes to its own folder (no deps; the test appends it to
# sys.path behind the virtualenv's packages), with the Kubernetes client it imports (and the
# python-dateutil the virtualenv's botocore and graphene accept, so pip reports no conflict).
K8S_LAUNCHER := $(VENV)/k8s-launcher
$(K8S_LAUNCHER)/dagster_k8s: $(BIN)/curate
	$(BIN)/pip install -q --no-deps --target $(K8S_LAUNCHER) dagster-k8s==0.29.27
	$(BIN)/pip install -q --target $(K8S_LAUNCHER) kubernetes==36.0.3 "python-dateutil<3"
	touch $@

setup-scale: setup $(S3RVER) $(HELM_SDK) $(K8S_LAUNCHER)/dagster_k8s

demo: setup
	$(BIN)/curate demo

# pytest-xdist workers, each test file on one worker (a module's fixture, such as the Ray cluster scenario,
# runs once): on the 2-core CI machine two workers take the suite from 28-32 min to 16-18 min
TEST_WORKERS ?= 2
test: setup-scale
	$(BIN)/python -m pytest -q -rs --durations=25 -n $(TEST_WORKERS) --dist loadfile

test-fast: setup-scale
	$(BIN)/python -m pytest -q -m "not browser and not slow" -n $(TEST_WORKERS) --dist loadfile

ui: setup
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# every benchmark script (long: load.py alone takes ~30 min), stopping at the first that fails. The full
# runs need the Flickr photos (../shared/evaldata, or CURATE_FLICKR_DIR); on a fresh clone run
# `make benchmarks SMOKE=1` (each script's --smoke: seconds, no figures). data_juicer.py compares with
# Data-Juicer, installed apart (see its --help): DJ_PROCESS=/path/to/dj-process, else it is skipped.
# setup-scale: report_s3.py measures against s3rver and scale.py on a Ray cluster
benchmarks: setup-scale
	@for b in benchmarks/[!_]*.py; do \
	  if [ "$$b" = benchmarks/data_juicer.py ] && [ -z "$$DJ_PROCESS" ] && [ -z "$(SMOKE)" ]; then \
	    echo "== $$b skipped: set DJ_PROCESS to Data-Juicer's dj-process"; continue; fi; \
	  echo "== $$b"; $(BIN)/python $$b $(if $(SMOKE),--smoke) || exit 1; \
	done

clean:
	rm -rf data/warehouse data/dagster_home
